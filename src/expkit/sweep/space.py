"""A sweep's search space: `--space FLAG=KIND:SPEC` parsed, walked by a grid, asked of a trial."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from expkit.config.args import Args
from expkit.errors import ExpkitError, UsageError

if TYPE_CHECKING:
    import optuna

KINDS = ("loguniform", "uniform", "int", "logint", "choice")


class Space(Args):
    """One parameter's search space, parsed from `kind:spec` (see `parse_space`)."""

    kind: Literal["loguniform", "uniform", "int", "logint", "choice"]
    low: float | None = None
    high: float | None = None
    step: int | None = None
    choices: list[str] = Field(default_factory=list)


def split_choices(text: str) -> list[str]:
    """`[64],[128,64],relu` -> ['[64]', '[128,64]', 'relu']: commas inside brackets stay."""
    out, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{(" and 1) or 0
        depth -= (char in "]})" and 1) or 0
        if char == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    out.append(current)
    return [item.strip() for item in out]


def parse_space(flag: str, text: str) -> Space:
    """One `--space flag=kind:spec` value as a Space, or a UsageError saying what is wrong."""
    kind, _, spec = text.partition(":")
    if kind not in KINDS:
        raise UsageError(f"--space {flag}={text}: unknown kind {kind!r}; use one of "
                         f"{', '.join(KINDS)}, e.g. lr=loguniform:1e-4:1e-2")
    if kind == "choice":
        choices = split_choices(spec)
        if not spec or any(c == "" for c in choices):
            raise UsageError(f"--space {flag}={text}: choice needs values, e.g. choice:[64],[128,64]")
        return Space(kind="choice", choices=choices)
    parts = spec.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3) or (len(numbers) == 3 and kind != "int") \
            or not all(math.isfinite(n) for n in numbers) or numbers[0] >= numbers[1]:
        raise UsageError(f"--space {flag}={text}: expected {kind}:LOW:HIGH"
                         f"{'[:STEP]' if kind == 'int' else ''} with LOW < HIGH, e.g. "
                         + ("lr=loguniform:1e-4:1e-2" if "uniform" in kind else "epochs=int:2:10"))
    if kind.startswith("log") and numbers[0] <= 0:
        raise UsageError(f"--space {flag}={text}: a log scale needs LOW > 0")
    if "int" in kind and not all(n == int(n) for n in numbers):
        raise UsageError(f"--space {flag}={text}: int bounds must be whole numbers")
    return Space(kind=kind, low=numbers[0], high=numbers[1],
                 step=int(numbers[2]) if len(numbers) == 3 else None)


def grid_values(space: Space) -> list[Any]:
    """Every value of a space the grid sampler can walk (choices, or each int in range)."""
    if space.kind == "choice":
        return list(space.choices)
    if space.kind == "int" and space.low is not None and space.high is not None:
        return list(range(int(space.low), int(space.high) + 1, space.step or 1))
    raise UsageError(f"--sampler grid: a {space.kind} range has no grid; use choice:... or "
                     "int:LO:HI, or --sampler tpe|random")


def suggest(trial: optuna.Trial, name: str, space: Space) -> Any:
    """Ask the trial for a value of `name` in `space` (as the flag's text for choices)."""
    if space.kind == "choice":
        return trial.suggest_categorical(name, space.choices)
    assert space.low is not None and space.high is not None
    if space.kind in ("int", "logint"):
        return trial.suggest_int(name, int(space.low), int(space.high), step=space.step or 1,
                                 log=space.kind == "logint")
    return trial.suggest_float(name, space.low, space.high, log=space.kind == "loguniform")




def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ExpkitError("sweeps need Optuna, which is not installed; install it with "
                          "pip install 'expkit[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna
