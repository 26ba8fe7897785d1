"""Metrics an experiment declares: each a direction, computed over a whole split from sums.

`step` returns per-batch *sums* (tensors); the loop adds them up on the device, reduces them
across ranks once per evaluation, and then computes each declared metric:

- a plain direction (`"acc": "max"`) is the per-example mean of the sum of the same name;
- a `Metric` computes its value from the split's sums and example count, which is how
  metrics that are not per-example means are exact over the whole split: R² from the sums of
  y, y² and squared errors, perplexity as the exp of the mean negative log-likelihood.

    metrics = {"loss": "min", "mae": "min", "r2": r2()}

- a metric object that keeps its own state (a torchmetrics `Metric`, e.g. F1 or AUROC) is
  updated with what `step` returns under its name (a tuple of tensors: `update(*value)`), and
  computed once per evaluation (reduced across ranks by the object itself under torchrun). Its
  direction is its `higher_is_better`. It is computed on the evaluated splits (val, test),
  not while training.

    metrics = {"loss": "min", "f1": BinaryF1Score(), "auroc": BinaryAUROC()}

- a metric declared `"report"` is computed (a per-example mean, or a `Metric` whose direction
  is "report") and shown for reference only: a baseline computed alongside the model's, e.g.
  a naive forecast's error. It is never monitored (no best epoch, no early stopping, no
  sweep objective), never marked best and never tested in `compare`.

    metrics = {"loss": "min", "mae": "min", "naive_mae": "report"}

Sums that no declared metric names and no `Metric` uses are logged as means too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard

from expkit.errors import ExpkitError

Direction = Literal["min", "max"]
#: how a metric is declared: which way is better, or "report" (shown for reference only)
Kind = Literal["min", "max", "report"]
REPORT = "report"


@dataclass(frozen=True)
class Metric:
    """A metric computed from a split's sums: `compute(sums, count)`; `uses` names the sums it
    reads (they are inputs, not metrics of their own, unless declared as well)."""

    direction: Kind
    compute: Callable[[Mapping[str, float], int], float]
    uses: tuple[str, ...] = ()


class Stateful(Protocol):
    """A metric object with its own state: torchmetrics' `Metric` interface (what expkit uses)."""

    @property
    def higher_is_better(self) -> bool | None:
        """Whether higher values are better (None: unknown)."""

    def update(self, *args: Any, **kwargs: Any) -> Any:
        """Add one batch to the state."""

    def compute(self) -> Any:
        """The value over everything added since the last reset."""

    def reset(self) -> Any:
        """Forget the state."""


Declared = Mapping[str, Kind | Metric | Stateful]


def stateful(how: object) -> TypeGuard[Stateful]:
    """Whether a declared metric is an object that keeps its own state (a torchmetrics Metric)."""
    return all(callable(getattr(how, name, None)) for name in ("update", "compute", "reset"))


def direction(how: Kind | Metric | Stateful, name: str = "") -> Kind:
    """Whether lower ("min") or higher ("max") is better for a declared metric, or "report"
    (a reference, never compared)."""
    if isinstance(how, Metric):
        return how.direction
    if isinstance(how, str):
        return how
    better = getattr(how, "higher_is_better", None)
    if better is None:
        raise ExpkitError(f"metric {name!r}: {type(how).__name__}.higher_is_better is None, so "
                          "expkit cannot tell which way is better; set it to True or False")
    return "max" if better else "min"


def r2(squared_error: str = "se", target: str = "y", target_squared: str = "y2") -> Metric:
    """The coefficient of determination over the whole split, 1 - SS_res / SS_tot, from the
    sums of squared errors, of targets and of squared targets (`step` returns the three)."""

    def compute(sums: Mapping[str, float], count: int) -> float:
        total = sums[target_squared] - sums[target] ** 2 / max(count, 1)
        return 1.0 - sums[squared_error] / total if total > 0 else math.nan

    return Metric("max", compute, (squared_error, target, target_squared))


def perplexity(nll: str = "nll") -> Metric:
    """exp of the mean negative log-likelihood per token (`step` returns the NLL's sum and
    counts tokens as its examples)."""

    def compute(sums: Mapping[str, float], count: int) -> float:
        mean = sums[nll] / max(count, 1)
        return math.exp(mean) if mean < 709 else math.inf  # exp overflows past ~709

    return Metric("min", compute, (nll,))


def produced(declared: Declared, names: Iterable[str], evaluation: bool = True) -> list[str]:
    """The metrics that what `step` returns under these `names` gives: each declared one whose
    inputs are there (stateful ones only in an `evaluation`), then the sums that nothing
    declares or uses (logged as means)."""
    present = list(names)
    used = {name for how in declared.values() if isinstance(how, Metric) for name in how.uses}
    out = [name for name, how in declared.items()
           if (all(use in present for use in how.uses) if isinstance(how, Metric)
               else name in present and (evaluation or not stateful(how)))]
    return out + [name for name in present if name not in declared and name not in used]


def compute_metrics(declared: Declared, sums: Mapping[str, float], count: int
                    ) -> dict[str, float]:
    """The value of each metric the split's `sums` (over `count` examples) give (stateful
    metrics aside: they compute themselves)."""
    out: dict[str, float] = {}
    for name in produced(declared, sums, evaluation=False):
        how = declared.get(name)
        out[name] = (float(how.compute(sums, count)) if isinstance(how, Metric)
                     else sums[name] / max(count, 1))
    return out
