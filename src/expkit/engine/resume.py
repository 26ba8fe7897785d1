"""Resume: continue a run in its own directory from checkpoints/last.pt, with only safe changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from expkit.config.args import flag_table
from expkit.config.machine import load_machine_config
from expkit.config.parsing import parse_argv
from expkit.config.registry import Registry
from expkit.engine.runner import execute
from expkit.errors import ExpkitError, UsageError
from expkit.rundir.dirs import RunRecord
from expkit.training.checkpoint import LAST, load_checkpoint
from expkit.utils.console import Console

#: arguments that may change on resume without changing what was trained so far
SAFE_CHANGES = {("epochs",), ("max_steps",), ("eval_batch_size",), ("trainer", "use_wandb"),
                ("trainer", "progress"), ("trainer", "use_tensorboard"), ("trainer", "use_mlflow"),
                ("trainer", "mlflow_log_checkpoints"),
                ("trainer", "early_stopping_patience"), ("trainer", "early_stopping_min_delta")}


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run directory; a clear error for a folder that is not a run."""
    config_file = Path(run_dir) / "config.json"
    if not config_file.is_file():
        raise UsageError(f"{run_dir}: not a run directory (no config.json); give a folder like "
                         "results/<experiment_id>/<time>-<id>")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise ExpkitError(f"{config_file}: unreadable ({e})") from None
    if not isinstance(config, dict) or "experiment_id" not in config:
        raise ExpkitError(f"{config_file}: not an expkit config (no experiment_id)")
    return config


def _leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _leaves(value, (*prefix, key))
        else:
            out[(*prefix, key)] = value
    return out


def unsafe_changes(old: dict[str, Any], new: dict[str, Any], names: dict[tuple[str, ...], str]
                   ) -> list[str]:
    """One line per changed argument that a resume cannot accept."""
    before, after = _leaves(old), _leaves(new)
    return [f"--{names.get(path, '.'.join(path))}: was {before.get(path)!r}, now {after.get(path)!r}"
            for path in sorted(set(before) | set(after))
            if before.get(path) != after.get(path) and path not in SAFE_CHANGES]


def resume_run(run_dir: Path, overrides: list[str], registry: Registry, prog: str,
               callbacks: list[Any] | None = None) -> int:
    """Continue `run_dir` from last.pt; returns the exit code (0 if it was already finished).
    `callbacks` join the run's own (a sweep trial's reporting)."""
    run_dir = Path(run_dir).absolute()
    config = read_run_config(run_dir)
    experiment_cls = registry.load(config["experiment_id"])
    args_cls = experiment_cls.args_class
    args = parse_argv(args_cls, overrides, prog, base=config)
    names = {f.path: f.name for f in flag_table(args_cls).values()}
    changed = unsafe_changes(config, args.model_dump(mode="json"), names)
    if (config.get("max_steps") is None) != (args.max_steps is None):  # type: ignore[attr-defined]
        changed.append("--max_steps: a run keeps counting what it started with (epochs or "
                       f"steps), recorded {config.get('max_steps')!r}")
    if changed:
        raise UsageError(*[f"cannot change on resume: {line}" for line in changed],
                         hint="only --epochs, --max_steps, --eval_batch_size, --use_wandb, "
                              "--use_tensorboard, --use_mlflow, --progress and the early-stopping flags may "
                              "change; start a new run for the rest")
    last = run_dir / "checkpoints" / LAST
    if not last.is_file():
        raise ExpkitError(f"{run_dir}: no checkpoints/{LAST} to resume from (the run stopped "
                          "before its first epoch ended, or ran with --save_checkpoints=false)")
    state = load_checkpoint(last)
    if state.get("experiment_id") != config["experiment_id"]:
        raise ExpkitError(f"{last}: written by experiment {state.get('experiment_id')!r}, but this "
                          f"run is {config['experiment_id']!r}")
    mismatch = unsafe_changes(state.get("config", {}), config, names)
    if mismatch:
        raise ExpkitError(f"{last}: written with other arguments than config.json: "
                          + "; ".join(mismatch))
    record = RunRecord(run_dir).read()
    max_steps = args.max_steps  # type: ignore[attr-defined]
    trained = (state.get("steps", 0) >= max_steps if max_steps is not None
               else state["epoch"] >= args.epochs)  # type: ignore[attr-defined]
    complete = state["partial"] is None and (trained or state.get("stop_reason") is not None)
    if record.get("status") == "finished" and complete:
        done, flag = ((f"{state['steps']} steps", "--max_steps") if max_steps is not None
                      else (f"{state['epoch']} epochs", "--epochs"))
        print(f"{run_dir}: already finished after {done}; nothing to do "
              f"(to train longer: {prog} resume {run_dir} {flag}=N)")
        return 0
    console = Console()
    machine = load_machine_config(announce=console.print)
    return execute(experiment_cls(args, machine, console), argv=["resume", str(run_dir), *overrides],
                   run_dir=run_dir, resume=state, callbacks=callbacks)
