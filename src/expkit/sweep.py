"""Hyperparameter sweeps with Optuna: each trial a normal run, one study in SQLite or PostgreSQL.

    expkit sweep --experiment_id=mnist --trials 20 --space lr=loguniform:1e-4:1e-2 \\
        --space hidden_sizes=choice:[64],[128,64] --direction max --workers 2

The study is created once, before any worker starts (Optuna workers racing to create a fresh
storage crash on both backends). Workers (local processes, or the same command on other
machines with `--storage postgresql+psycopg://...`) ask the study for parameters, train a run
with them, report the monitored metric each epoch (so `--pruner median` can stop bad trials
early) and tell the best value. Re-running the command resumes the sweep: finished trials
stay, failed or interrupted ones are retried once, and the total stays `--trials`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field, ValidationError, field_validator

from expkit.args import Args, flag_table, parse_argv
from expkit.config import redact
from expkit.errors import ExpkitError, UsageError
from expkit.registry import Registry
from expkit.rundirs import safe_name
from expkit.sweep_space import Space, grid_values, import_optuna, parse_space, suggest
from expkit.sweep_study import (
    finished_count,
    load_study,
    locked,
    open_storage,
    recover,
    storage_url,
    sweep_dir,
    target_trials,
)
from expkit.sweep_summary import summarize
from expkit.training.callbacks import Callback

if TYPE_CHECKING:
    from expkit.experiment import ExperimentArgs
    from expkit.training.loop import Trainer

SWEEP_OPTIONS = ("name", "trials", "space", "direction", "sampler", "pruner", "storage", "workers",
                 "seed", "sweep", "status")
MAX_FAILS_IN_A_ROW = 3  # a worker gives up after this many failed trials in a row (a bug, not bad luck)


class SweepSpec(Args):
    """A sweep: which experiment, how many trials, what to search, and where the study lives."""

    experiment_id: str = Field(description="the registered experiment every trial runs")
    name: str | None = Field(None, description="the study's name; auto = the experiment id")
    trials: int = Field(20, ge=1, description="how many finished (complete or pruned) trials in all")
    space: dict[str, str] = Field(description="flag -> loguniform:LO:HI | uniform:LO:HI | "
                                  "int:LO:HI[:STEP] | logint:LO:HI | choice:A,B,...")
    direction: Literal["max", "min"] | None = Field(
        None, description="maximize or minimize --monitor; auto = the experiment's --monitor_mode")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna sampler")
    pruner: Literal["none", "median"] = Field("none", description="stop bad trials early")
    storage: str | None = Field(None, description="Optuna storage URL; auto = SQLite at "
                                "results/sweeps/<name>/study.db")
    workers: int = Field(1, ge=1, description="local worker processes")
    seed: int | None = Field(None, ge=0, description="sampler seed (worker k uses seed + k) and "
                             "every trial's training seed")
    args: list[str] = Field(default_factory=list, description="fixed flags for every trial")

    @field_validator("direction", mode="before")
    @classmethod
    def _long_direction(cls, value: Any) -> Any:
        return {"maximize": "max", "minimize": "min"}.get(value, value)

    @property
    def study_name(self) -> str:
        """The study's name (also its folder under results/sweeps)."""
        return self.name or self.experiment_id


# ---- the command line --------------------------------------------------------------------


def parse_sweep_argv(argv: list[str]) -> tuple[SweepSpec | None, str | None, dict[str, Any]]:
    """(spec, --status name, machine-independent options) from `expkit sweep ...` argv."""
    from expkit.mappings import read_mapping

    values: dict[str, Any] = {}
    spaces: dict[str, str] = {}
    fixed: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if name in SWEEP_OPTIONS:
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise UsageError(f"--{name}: needs a value, e.g. --{name}=..."
                                     if name != "space" else
                                     "--space: needs FLAG=KIND:SPEC, e.g. --space lr=loguniform:1e-4:1e-2")
                value, i = argv[i + 1], i + 1
            if name == "space":
                flag, sep, spec = value.partition("=")
                if not sep or not flag:
                    raise UsageError(f"--space {value}: expected FLAG=KIND:SPEC, e.g. "
                                     "--space lr=loguniform:1e-4:1e-2")
                spaces[flag.lstrip("-")] = spec
            elif name in values:
                raise UsageError(f"--{name}: given 2 times; give it once")
            else:
                values[name] = value
        else:
            fixed.append(token)
        i += 1
    status = values.pop("status", None)
    base: dict[str, Any] = {}
    if "sweep" in values:
        base, _ = read_mapping(Path(values.pop("sweep")), "a sweep (--sweep)")
    for token in fixed:
        if token.startswith("--experiment_id"):
            values["experiment_id"] = token.partition("=")[2]
    fixed = [t for t in fixed if not t.startswith("--experiment_id")]
    merged = {**base, **values}
    merged["space"] = {**(base.get("space") or {}), **spaces}
    merged["args"] = [*(base.get("args") or []), *fixed]
    if status is not None:
        return None, status, merged
    try:
        return SweepSpec.model_validate(merged), None, merged
    except ValidationError as e:
        from expkit.args import describe_validation_error

        raise UsageError(*describe_validation_error(e, None, where="sweep ")) from None


def prepare(spec: SweepSpec, registry: Registry, prog: str) -> tuple[dict[str, Space], Any]:
    """Check the space and the fixed flags against the experiment; (spaces, experiment class)."""
    if safe_name(spec.study_name) != spec.study_name:
        raise UsageError(f"--name: got {spec.study_name!r}; use letters, digits, '-', '_', '.' "
                         "(it names a folder)")
    if not spec.space:
        raise UsageError("sweep needs at least one --space FLAG=KIND:SPEC, e.g. "
                         "--space lr=loguniform:1e-4:1e-2")
    experiment_cls = registry.load(spec.experiment_id)
    args_cls = experiment_cls.args_class
    table = flag_table(args_cls)
    spaces = {}
    for flag, text in spec.space.items():
        if flag not in table:
            import difflib

            near = difflib.get_close_matches(flag, list(table), n=1)
            raise UsageError(f"--space {flag}=...: {spec.experiment_id} has no flag --{flag}"
                             + (f"; did you mean --{near[0]}?" if near else ""))
        spaces[flag] = parse_space(flag, text)
    for flag in spaces:
        if any(t == f"--{flag}" or t.startswith(f"--{flag}=") for t in spec.args):
            raise UsageError(f"--{flag}: both fixed and in --space; give it once")
    samples = [spaces[f].choices if spaces[f].kind == "choice" else [spaces[f].low, spaces[f].high]
               for f in spaces]
    for flag, values in zip(spaces, samples, strict=True):  # every bound/choice must be a valid flag
        for value in values:
            if spaces[flag].kind in ("int", "logint") and value is not None:
                value = int(value)
            try:
                parse_argv(args_cls, [f"--experiment_id={spec.experiment_id}", *spec.args,
                                      f"--{flag}={value}"], prog)
            except UsageError as e:
                if not any(f"--{flag}" in line for line in e.lines):
                    raise  # a fixed flag is wrong
                raise UsageError(*(f"--space {flag}={spec.space[flag]}: {line}" for line in e.lines),
                                 hint=e.hint) from None
    from expkit.experiment import resolve_monitor  # imports torch: only once a sweep starts

    args = cast("ExperimentArgs", parse_argv(
        args_cls, [f"--experiment_id={spec.experiment_id}", *spec.args], prog))
    resolve_monitor(experiment_cls, args)
    mode = args.monitor_mode
    if spec.direction is not None and spec.direction != mode:
        raise UsageError(f"--direction {spec.direction}: but --monitor {args.monitor} has "
                         f"--monitor_mode={mode}; drop --direction (it follows --monitor), or "
                         "monitor another metric")
    spec.direction = spec.direction or mode  # optimize what runs monitor
    if spec.sampler == "grid":
        for space in spaces.values():
            grid_values(space)
    return spaces, experiment_cls


class Report(Callback):
    """Report --monitor to the trial each epoch; stop the run when the pruner says so."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.pruned = False

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """Report this epoch's value; ask the pruner whether to go on."""
        value = metrics.get(trainer.monitor)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, trainer.steps if trainer.step_based else trainer.epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True
            trainer.stop_reason = f"pruned by the median pruner after {trainer.at()}"


def run_worker(spec: SweepSpec, registry: Registry, prog: str, worker: int = 0) -> int:
    """Run trials until the study holds `--trials` finished ones; returns an exit code."""
    from expkit.config import load_machine_config
    from expkit.console import Console
    from expkit.runner import execute

    optuna = import_optuna()
    state = optuna.trial.TrialState
    spaces, experiment_cls = prepare(spec, registry, prog)
    machine = load_machine_config(announce=lambda _: None)
    folder = sweep_dir(machine.results_dir, spec.study_name)
    url = storage_url(spec, folder)
    study = load_study(spec, spaces, url, worker)
    target = target_trials(spec, spaces)
    fails_in_a_row = 0
    tag = f"[worker {worker}] " if spec.workers > 1 else ""
    while True:
        with locked(folder / ".lock"):
            trials = study.get_trials(deepcopy=False)
            counted = sum(t.state in (state.COMPLETE, state.PRUNED, state.RUNNING) for t in trials)
            if counted >= target:
                return 0
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
        try:
            values = {name: suggest(trial, name, space) for name, space in spaces.items()}
        except ValueError as e:  # e.g. a choice list that differs from the study's
            study.tell(trial, state=state.FAIL)
            name = next((n for n in spaces if n in str(e)), next(iter(spaces)))
            raise UsageError(f"--space {name}: does not fit study {spec.study_name!r} ({e}); a "
                             "choice list cannot change within a study: start a new one with "
                             "--name") from None
        argv = [f"--experiment_id={spec.experiment_id}", *spec.args,
                *(f"--{name}={value}" for name, value in values.items()),
                *([f"--seed={spec.seed}"] if spec.seed is not None else [])]  # repeatable trials
        args = parse_argv(experiment_cls.args_class, argv, prog)
        console = Console()
        console.quiet = True  # one line per trial on the console; each run's log.txt has the rest
        experiment = experiment_cls(args, machine, console)
        report = Report(trial)
        shown = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items())
        try:
            code = execute(experiment, argv=argv, callbacks=[report],
                           extra_record={"sweep": {"name": spec.study_name, "trial": trial.number,
                                                   "storage": redact(url)}})
        except ExpkitError as e:
            code, error = 1, str(e)
        else:
            error = ""
        run_dir = str(experiment.run_dir) if experiment.run_dir else None
        if run_dir:
            trial.set_user_attr("run_dir", run_dir)
        best = _best_value(run_dir)
        if code == 0 and report.pruned:
            study.tell(trial, state=state.PRUNED)
            outcome = "pruned"
        elif code == 0 and best is not None:
            study.tell(trial, best)
            outcome = f"{args.monitor} {best:.4f}"  # type: ignore[attr-defined]
        else:
            study.tell(trial, state=state.FAIL)
            outcome = f"failed ({error or f'exit code {code}'})"
        print(f"{tag}trial {trial.number}: {shown}  ->  {outcome}  {run_dir or ''}", flush=True)
        if code in (130, 143):  # the worker itself was asked to stop
            return code
        fails_in_a_row = fails_in_a_row + 1 if outcome.startswith("failed") else 0
        if fails_in_a_row >= MAX_FAILS_IN_A_ROW:
            raise ExpkitError(f"{MAX_FAILS_IN_A_ROW} trials in a row failed; the last: "
                              f"{error or f'exit code {code}'} (see the run directories)")


def _best_value(run_dir: str | None) -> float | None:
    if not run_dir:
        return None
    try:
        summary = json.loads((Path(run_dir) / "metrics.json").read_text())
        return float(summary["best"][summary["monitor"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_sweep(argv: list[str], registry: Registry, prog: str, registry_module: str | None) -> int:
    """`expkit sweep ...`: create (or reopen) the study, run the workers, print the summary."""
    spec, status_name, options = parse_sweep_argv(argv)
    from expkit.config import load_machine_config

    if status_name is not None:
        machine = load_machine_config(announce=print)
        return show_status(status_name, options.get("storage"), machine.results_dir)
    assert spec is not None
    spaces, _ = prepare(spec, registry, prog)  # before anything is written
    machine = load_machine_config(announce=print)
    folder = sweep_dir(machine.results_dir, spec.study_name)
    folder.mkdir(parents=True, exist_ok=True)
    url = storage_url(spec, folder)
    study = load_study(spec, spaces, url)  # created here, once, before any worker starts
    (folder / "sweep.json").write_text(json.dumps(
        {**spec.model_dump(mode="json"), "storage": redact(url)}, indent=2) + "\n")
    retried = recover(study)
    done = finished_count(study)
    print(f"sweep {spec.study_name}: {done}/{target_trials(spec, spaces)} trials done, "
          f"{spec.workers} worker{'s' if spec.workers > 1 else ''}, storage {redact(url)}"
          + (f"; retrying failed trials {retried}" if retried else ""), flush=True)
    if spec.workers == 1:
        code = run_worker(spec, registry, prog)
    else:
        code = _run_workers(spec, registry_module, prog)
    summarize(study, folder)
    return code


def _run_workers(spec: SweepSpec, registry_module: str | None, prog: str) -> int:
    """Start `spec.workers` local worker processes and wait for them all."""
    payload = json.dumps({"spec": spec.model_dump(mode="json"), "registry": registry_module,
                          "prog": prog})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, "-m", "expkit.sweep", payload, str(k)], env=env)
             for k in range(spec.workers)]
    codes = []
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the same SIGINT: let them stop their trials
        codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


def worker_main(payload: str, worker: str) -> int:
    """Entry point of a local worker process started by `_run_workers`."""
    data = json.loads(payload)
    registry = (Registry.from_module(data["registry"]) if data["registry"]
                else Registry.from_entry_points())
    prog = data["prog"]
    try:
        return run_worker(SweepSpec.model_validate(data["spec"]), registry, prog, int(worker))
    except ExpkitError as e:
        for line in e.lines:
            print(f"{prog}: error: [worker {worker}] {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def show_status(name: str, storage: str | None, results_dir: Path) -> int:
    """`expkit sweep --status NAME`: the table, the best trial and sweep.png of an existing sweep."""
    optuna = import_optuna()
    folder = sweep_dir(results_dir, name)
    url = storage or f"sqlite:///{(folder / 'study.db').absolute()}"
    if storage is None and not (folder / "study.db").is_file():
        raise UsageError(f"no sweep {name!r} under {results_dir / 'sweeps'} (no study.db); "
                         "start one with: expkit sweep --experiment_id=ID --space ...")
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise UsageError(f"--status {name}: no such study in {redact(url)}") from None
    folder.mkdir(parents=True, exist_ok=True)
    summarize(study, folder)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1], sys.argv[2]))
