"""A sweep's worker: asks the study for trials and trains each as a normal run (reporting the
monitored metric so a pruner can stop it); under SLURM, a requeued worker job first finishes,
from its checkpoint, the trial it was running when it was stopped.

Local workers are processes started by `expkit sweep --workers K` (`python -m
expkit.sweep.worker PAYLOAD K`); with `--launcher=slurm` each is a batch job.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expkit.config.machine import redact
from expkit.config.parsing import parse_argv
from expkit.config.registry import Registry
from expkit.errors import ExpkitError, UsageError
from expkit.sweep.space import Space, import_optuna, suggest
from expkit.sweep.spec import SweepSpec, prepare
from expkit.sweep.study import (
    enqueue_next_point,
    load_study,
    locked,
    storage_url,
    sweep_dir,
    target_trials,
)
from expkit.training.callbacks import Callback
from expkit.training.checkpoint import LAST

if TYPE_CHECKING:
    from expkit.training.callbacks import TrainerView

MAX_FAILS_IN_A_ROW = 3  # a worker gives up after this many failed trials in a row (a bug, not bad luck)


class Report(Callback):
    """Report --monitor to the trial each epoch; stop the run when the pruner says so."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.pruned = False

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
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
    from expkit.config.machine import load_machine_config

    spaces, experiment_cls = prepare(spec, registry, prog)
    machine = load_machine_config(announce=lambda _: None)
    folder = sweep_dir(machine.results_dir, spec.study_name)
    url = storage_url(spec, folder)
    study = load_study(spec, spaces, url, worker)
    tag = f"[worker {worker}] " if spec.workers > 1 else ""
    job = os.environ.get("SLURM_JOB_ID")
    code = _resume_stopped_trials(study, job, registry, prog, tag)
    if code:
        return code
    fails_in_a_row = 0
    while (asked := _next_trial(study, spec, spaces, folder, job)) is not None:
        trial, values = asked
        code, outcome = _run_trial(spec, experiment_cls, machine, study, trial, values,
                                   (url, prog, tag, job))
        if code in (130, 143):  # the worker itself was asked to stop
            return code
        fails_in_a_row = fails_in_a_row + 1 if outcome.startswith("failed") else 0
        if fails_in_a_row >= MAX_FAILS_IN_A_ROW:
            last = outcome.removeprefix("failed (").removesuffix(")")
            raise ExpkitError(f"{MAX_FAILS_IN_A_ROW} trials in a row failed; the last: {last} "
                              "(see the run directories)")
    return 0


def _resume_stopped_trials(study: Any, job: str | None, registry: Registry, prog: str,
                           tag: str) -> int:
    """A restarted SLURM worker job first finishes the trials it was running when it stopped."""
    state = import_optuna().trial.TrialState
    for stopped in study.get_trials(deepcopy=False, states=(state.RUNNING,)) if job else []:
        if stopped.user_attrs.get("slurm_job") == job and stopped.user_attrs.get("run_dir"):
            code = _resume_trial(study, stopped, registry, prog, tag)
            if code:
                return code
    return 0


def _next_trial(study: Any, spec: SweepSpec, spaces: dict[str, Space], folder: Path,
                job: str | None) -> tuple[Any, dict[str, Any]] | None:
    """The next trial of this worker and its values (under the sweep's lock: count, ask, and
    suggest, so that the next worker to look sees this trial's grid point taken), or None
    when the study holds its trials (or every grid point has one)."""
    state = import_optuna().trial.TrialState
    with locked(folder / ".lock"):
        trials = study.get_trials(deepcopy=False)
        counted = sum(t.state in (state.COMPLETE, state.PRUNED, state.RUNNING) for t in trials)
        if counted >= target_trials(spec, spaces):
            return None
        if spec.sampler == "grid" and not enqueue_next_point(study, spaces):
            return None  # every point has a trial (a failed one is retried when the sweep reruns)
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if job:
            trial.set_user_attr("slurm_job", job)
        return trial, _suggested(study, trial, spec, spaces)


def _suggested(study: Any, trial: Any, spec: SweepSpec, spaces: dict[str, Space]) -> dict[str, Any]:
    """The trial's value of each searched flag; a space that does not fit the study is a
    usage error (the trial is failed first)."""
    try:
        return {name: suggest(trial, name, space) for name, space in spaces.items()}
    except ValueError as e:  # e.g. a choice list that differs from the study's
        study.tell(trial, state=import_optuna().trial.TrialState.FAIL)
        name = next((n for n in spaces if n in str(e)), next(iter(spaces)))
        raise UsageError(f"--space {name}: does not fit study {spec.study_name!r} ({e}); a "
                         "choice list cannot change within a study: start a new one with "
                         "--name") from None


def _run_trial(spec: SweepSpec, experiment_cls: Any, machine: Any, study: Any, trial: Any,
               values: dict[str, Any], where: tuple[str, str, str, str | None]) -> tuple[int, str]:
    """Train one trial as a normal run and tell the study how it ended: (exit code, outcome as
    printed). `where` is (storage URL, prog, console tag, SLURM job)."""
    from expkit.engine.runner import execute
    from expkit.utils.console import Console

    url, prog, tag, job = where
    argv = [f"--experiment_id={spec.experiment_id}", *spec.args,
            *(f"--{name}={value}" for name, value in values.items()),
            *([f"--seed={spec.seed}"] if spec.seed is not None else [])]  # repeatable trials
    args = parse_argv(experiment_cls.args_class, argv, prog)
    console = Console()
    console.quiet = True  # one line per trial on the console; each run's log.txt has the rest
    experiment = experiment_cls(args, machine, console)
    report = Report(trial)
    try:
        code, error = execute(experiment, argv=argv, callbacks=[report], extra_record={
            "sweep": {"name": spec.study_name, "trial": trial.number, "storage": redact(url)}}), ""
    except ExpkitError as e:
        code, error = 1, str(e)
    run_dir = str(experiment.run_dir) if experiment.run_dir else None
    if run_dir:
        trial.set_user_attr("run_dir", run_dir)
    if job and code in (130, 143) and run_dir and (Path(run_dir) / "checkpoints" / LAST).is_file():
        print(f"{tag}trial {trial.number}: stopped with a checkpoint; it resumes when job {job} "
              "restarts", flush=True)  # left running in the study, for the restarted job
        return code, "stopped"
    outcome = _tell(study, trial, code, report, run_dir, error, str(args.monitor))  # type: ignore[attr-defined]
    shown = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"{tag}trial {trial.number}: {shown}  ->  {outcome}  {run_dir or ''}", flush=True)
    return code, outcome


def _tell(study: Any, trial: Any, code: int, report: Report, run_dir: str | None, error: str,
          monitor: str) -> str:
    """Tell the study how a trial's run ended (complete with its best value, pruned or
    failed); returns the outcome as printed."""
    state = import_optuna().trial.TrialState
    best = _best_value(run_dir)
    if code == 0 and report.pruned:
        study.tell(trial, state=state.PRUNED)
        return "pruned"
    if code == 0 and best is not None:
        study.tell(trial, best)
        return f"{monitor} {best:.4f}"
    study.tell(trial, state=state.FAIL)
    return f"failed ({error or f'exit code {code}'})"


def _resume_trial(study: Any, frozen: Any, registry: Registry, prog: str, tag: str) -> int:
    """A restarted SLURM worker finishes the trial its job was running when it was stopped:
    the trial's run resumes from its checkpoint, reporting to the same trial."""
    from expkit.engine.resume import resume_run

    optuna = import_optuna()
    trial = optuna.trial.Trial(study, frozen._trial_id)
    report = Report(trial)
    run_dir = str(frozen.user_attrs["run_dir"])
    print(f"{tag}trial {frozen.number}: resuming {run_dir}", flush=True)
    try:
        code, error = resume_run(Path(run_dir), [], registry, prog, callbacks=[report]), ""
    except ExpkitError as e:
        code, error = 1, str(e)
    if code in (130, 143):
        return code
    monitor = json.loads((Path(run_dir) / "config.json").read_text()).get("monitor") or "value"
    outcome = _tell(study, trial.number, code, report, run_dir, error, monitor)
    print(f"{tag}trial {frozen.number}: resumed  ->  {outcome}  {run_dir}", flush=True)
    return 0


def _best_value(run_dir: str | None) -> float | None:
    if not run_dir:
        return None
    try:
        summary = json.loads((Path(run_dir) / "metrics.json").read_text())
        return float(summary["best"][summary["monitor"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1], sys.argv[2]))
