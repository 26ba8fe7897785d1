"""What every command shares: the Context main() hands it, close matches and choice checks,
and the overview that `--help` prints. The commands' options are Args models (cli/flags.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from expkit.config.registry import Registry
from expkit.errors import UsageError
from expkit.utils.suggest import closest


@dataclass
class Context:
    """One invocation of the command line, handed to the command: the experiments, the
    program's name, the registry module (which sweep and repeat workers load again), and
    whether work started (False while a command has only parsed and printed: run_cli may then
    skip the interpreter's teardown, ~0.5 s once torch is imported)."""

    registry: Registry
    prog: str
    module: str | None = None
    work_started: bool = False


Command = Callable[[list[str], Context], int]


def flag_names(argv: list[str]) -> list[str]:
    """The names of the flags in argv (`--lr=3` and `--lr 3` are both "lr")."""
    return [t[2:].split("=", 1)[0] for t in argv if t.startswith("--") and len(t) > 2]


def close_match(word: str, options: Iterable[str]) -> str | None:
    """The option closest to a misspelled `word` (None when none is close)."""
    return closest(word, options)


def check_choice(name: str, value: str | None, choices: Iterable[str]) -> None:
    """A UsageError naming the valid values when option `name` got one that is not among them
    (None: the option was not given)."""
    allowed = list(choices)
    if value is None or value in allowed:
        return
    match = close_match(value, allowed)
    raise UsageError(f"{name}: got {value!r}{f' (did you mean {match!r}?)' if match else ''}; "
                     f"choose one of: {', '.join(allowed)}")


def results_folder(given: str | None) -> Path:
    """--results_dir when given, else the machine config's (without writing a config.yaml)."""
    if given:
        return Path(given)
    from expkit.config.machine import load_machine_config

    return load_machine_config(announce=lambda _: None).results_dir



#: one line per command, for `--help` and the completion script (main.COMMANDS runs them)
SUMMARIES: dict[str, str] = {
    "run": "train an experiment (the default command); --config FILE, --print_config",
    "resume": "continue a run from checkpoints/last.pt: resume RUN_DIR [--epochs=N]",
    "reproduce": "re-run a run's config and compare: reproduce RUN_DIR [--tolerance=X]",
    "sweep": "Optuna search: sweep --experiment_id=ID --space lr=loguniform:1e-4:1e-2 "
                         "--trials N [--workers K]",
    "repeat": "one setting over several seeds, as a group: repeat --seeds=N [--workers=K] "
              "--experiment_id=ID FLAGS",
    "lr-find": "learning-rate range test, a plot and a suggested lr: lr-find --experiment_id=ID "
               "[--lr_min=1e-7 --lr_max=10 --steps=100] FLAGS",
    "compare": "runs side by side + RESULTS/compare.png: compare RUN_DIR ... | "
                             "--experiment_id=ID --last N [--out FILE.png]",
    "report": "self-contained report.html: report RUN_DIR | report --index",
    "export": "a run's model to hand on, with a model card: export RUN_DIR "
              "[--weights=best|last|ema|swa] [--format=safetensors,pt2,onnx]",
    "submit": "run as a SLURM batch job: submit [--slurm_partition=P --slurm_time=T ...] RUN FLAGS",
    "job": "inside a SLURM job: start or resume its run: job RUN_DIR",
    "sync": "send runs to the MLflow server of config.yaml: sync RUN_DIR ...",
    "list": "table of runs: list [--experiment_id=ID] [--status=finished|...]",
    "schema": "JSON Schema of an experiment's arguments: schema --experiment_id=ID",
    "completion": "shell completion script: completion bash|zsh",
    "new": "write and register a new experiment: new NAME "
                     "[--template=classification|regression]",
}


def overview(registry: Registry, prog: str) -> str:
    """The top-level help: usage, the commands, and each registered experiment in one line."""
    lines = [f"usage: {prog} [run] --experiment_id=ID [--flag=value ...]",
             f"       {prog} --experiment_id=ID --help    that experiment's arguments",
             f"       {prog} --version                    expkit's version", ""]
    lines += ["commands:", *(f"  {name:<12}{doc}" for name, doc in SUMMARIES.items()), ""]
    lines.append("experiments:")
    width = max((len(i) for i in registry.ids()), default=0) + 2
    lines += [f"  {exp_id:<{width}}{registry.describe(exp_id)}" for exp_id in registry.ids()]
    return "\n".join(lines)
