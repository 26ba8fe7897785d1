"""The phases of a run, in the order `expkit.engine.runner` calls them: prepare the process,
build the data, open the run directory and its record, open the trackers, build the model and
the trainer (and restore a resumed one), fit, finish (best weights, test, summary); the ways a
run can fail are handled in one place (`failures_handled`), and `close_run` records how it
ended whatever happened.

Order matters for "nothing half-written": device, seed and data are checked before the run
directory exists; from then on, every exit (finished, failed, stopped) is recorded in run.json.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import secrets
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from expkit.config.args import flag_table
from expkit.data.base import DataInfo, DataSplits
from expkit.engine.callbacks import Heartbeat
from expkit.engine.experiment import BaseExperiment, ExperimentArgs
from expkit.engine.init import Initialisation
from expkit.engine.process import (
    EXIT_CODES,
    StoppedBeforeTraining,
    make_deterministic,
    seed_everything,
)
from expkit.engine.segments import resumed_fields, segment
from expkit.errors import ExpkitError, UsageError
from expkit.models.base import BaseModel
from expkit.rundir.dirs import RunRecord, alive_fields, create_run_dir, now
from expkit.rundir.provenance import file_checksums, write_start_record
from expkit.tracking import optional_trackers
from expkit.tracking.artifacts import Artifacts, SaveArtifacts
from expkit.tracking.base import Tracker, Tracking, checked, record_fields
from expkit.tracking.local import LocalFiles
from expkit.training.callbacks import Callback, ConsoleLine
from expkit.training.checkpoint import BEST, LAST, Checkpointing, load_checkpoint, load_weights
from expkit.training.distributed import SINGLE, Dist
from expkit.training.early_stopping import EarlyStopping
from expkit.training.loop import Trainer
from expkit.training.metrics import direction
from expkit.training.progress import NotebookProgress, ProgressBar
from expkit.training.timing import StepProfiler, Timings, profiled_steps
from expkit.utils.invocation import command, pinned
from expkit.utils.notebook import in_notebook


def prepare_process(experiment: BaseExperiment[Any], dist: Dist, device: torch.device) -> torch.device:
    """The rank's device, the precision it allows, one seed for every rank (drawn when none was
    given, and written back into the args), deterministic algorithms when asked, seeded RNGs."""
    args: ExperimentArgs = experiment.args
    experiment.console.quiet = experiment.console.quiet or not dist.is_main
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if args.trainer.precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision: got 'fp16', which needs CUDA; use --precision=bf16 on CPU")
    if args.seed is None:
        args.seed = int(dist.from_main(secrets.randbelow(2**31)))  # one seed for all ranks
        experiment.seed_generated = True
    if args.deterministic:
        make_deterministic()
    seed_everything(args.seed)
    return device


def load_data(experiment: BaseExperiment[Any], dist: Dist) -> DataSplits:
    """The experiment's data; rank 0 downloads and caches it first, the other ranks wait."""
    from expkit.training.checkpoint import check_state

    if not dist.is_main:
        dist.barrier()
    data = experiment.build_data()
    if dist.is_main:
        dist.barrier()
    check_state(data.state)
    return data


def open_run(experiment: BaseExperiment[Any], dist: Dist, device: torch.device, data: DataSplits,
             run_dir: Path | None, *, argv: list[str], resume: dict[str, Any] | None,
             sources: dict[str, str] | None, extra_record: dict[str, Any] | None
             ) -> tuple[Path, RunRecord]:
    """The run directory (made by rank 0, named to all ranks) and its record: the start record
    of a fresh run, or one more entry in a resumed run's `resumes`."""
    args: ExperimentArgs = experiment.args
    if run_dir is None:
        made = create_run_dir(experiment.machine.results_dir, args.experiment_id) if dist.is_main else None
        run_dir = Path(dist.from_main(made))
    experiment.run_dir = run_dir
    record = RunRecord(run_dir, write=dist.is_main)
    if dist.is_main:
        experiment.console.attach(run_dir / "log.txt")
    if dist.enabled:
        extra_record = {**(extra_record or {}), "distributed": dist.record()}
    if resume is None and dist.is_main:  # a run directory made beforehand (a SLURM job's) starts fresh too
        _record_start(experiment, record, device, data, argv, sources,
                      extra_record, dist)
    elif dist.is_main:
        before, at = record.read(), now()
        resumes = [*before.get("resumes", []), {"at": at, "argv": list(argv), **(extra_record or {})}]
        record.update(status="running", ended=None, resumes=resumes, **alive_fields(),
                      **resumed_fields(args, run_dir, before, dist, at))
    return run_dir, record


def _record_start(experiment: BaseExperiment[Any], record: RunRecord, device: torch.device,
                  data: DataSplits, argv: list[str], sources: dict[str, str] | None,
                  extra_record: dict[str, Any] | None, dist: Dist) -> None:
    """run.json of a fresh run: what ran, where (its first segment's processes), with which
    seed, data, code and machine."""
    args: ExperimentArgs = experiment.args
    sources = dict(sources or {})
    generated = experiment.seed_generated
    if generated:
        sources["seed"] = "generated"
    automatic = {"seed": str(args.seed)} if generated else {}
    if args.use_cuda is None:  # auto: what this machine chose
        automatic["use_cuda"] = "true" if device.type == "cuda" else "false"
    assert experiment.run_dir is not None
    record.update(experiment_id=args.experiment_id, argv=list(argv), status="running",
                  device=str(device), command=command(*pinned(list(argv), automatic)),
                  **alive_fields(),
                  flags={".".join(f.path): f.name for f in flag_table(type(args)).values()
                         if f.name != f.path[-1]},
                  started=(started := now()), start_ns=time.time_ns(), ended=None,
                  segments=[segment(started, dist)], sources=sources,
                  **(extra_record or {}),
                  seed={"value": args.seed, "generated": generated,
                        "seeded": ["python", "numpy", "torch"]},
                  data={"files": file_checksums(data.files, experiment.machine.cache_dir),
                        "streamed": data.streamed},
                  machine=experiment.machine.public(),
                  **write_start_record(experiment.run_dir,
                                       Path(inspect.getfile(type(experiment))).parent))


def local_files(experiment: BaseExperiment[Any], dist: Dist, run_dir: Path) -> list[Tracker]:
    """The tracker that is always on (rank 0 only): config.json, history.csv and .png, metrics.json."""
    if not dist.is_main:
        return []
    args: ExperimentArgs = experiment.args
    dataset = getattr(getattr(args, "dataset", None), "name", None)
    title = f"{args.experiment_id}{f' on {dataset}' if dataset else ''}  {run_dir.name}"
    return [LocalFiles(run_dir, title=title, warn=experiment.console.print, epochs=args.epochs,
                       max_steps=args.max_steps)]


def open_trackers(experiment: BaseExperiment[Any], dist: Dist, run_dir: Path, record: RunRecord,
                  resume: dict[str, Any] | None) -> list[Tracker]:
    """The trackers that are switched on (wandb, TensorBoard, MLflow) and the experiment's own,
    on rank 0 (an experiment's tracker lacking a Tracker method is a clear error here)."""
    if not dist.is_main:  # one rank writes files and talks to trackers
        return []
    args: ExperimentArgs = experiment.args
    own = [checked(t, f"{type(experiment).__name__}.build_trackers")
           for t in experiment.build_trackers(run_dir)]
    return [*optional_trackers(args.trainer, experiment.machine, args.experiment_id, run_dir,
                               (resume or {}).get("trackers") or {}, record.read(),
                               experiment.console.print), *own]


def announce(experiment: BaseExperiment[Any], dist: Dist, device: torch.device, run_dir: Path,
             data: DataSplits, fresh: bool) -> None:
    """The run's first line: what runs where, with which seed and how much data."""
    args: ExperimentArgs = experiment.args
    verb = "run" if fresh else "resume"
    ranks = f", {dist.world_size} ranks ({dist.backend})" if dist.enabled else ""
    experiment.console.print(
        f"{verb} {run_dir}  ({args.experiment_id}, {device}{ranks}, seed {args.seed}, "
        f"{len(data.train)} train / {len(data.val or [])} val / {len(data.test or [])} test"
        f"{', streamed from disk' if data.streamed else ''})")


def build_trainer(experiment: BaseExperiment[Any], dist: Dist, device: torch.device, run_dir: Path,
                  record: RunRecord, data: DataSplits, trackers: list[Tracker],
                  callbacks: list[Callback], model: BaseModel | None,
                  init: Initialisation | None, resume: dict[str, Any] | None) -> Trainer:
    """The trainer of `model` (with --init_from's weights, said in one line) with every
    callback, and a resumed run's state restored, the trackers given what they lack of its
    history."""
    args: ExperimentArgs = experiment.args
    config = args.model_dump(mode="json")
    for tracker in trackers:
        tracker.log_config(config)
    record.update(**record_fields(trackers))  # the trackers' runs exist now: run.json keeps them
    announce(experiment, dist, device, run_dir, data, resume is None)
    if model is None:  # its first build failed: again, inside the run that records the failure
        model = experiment.build_model(data.info)
    if init is not None:
        experiment.console.print(init.line(len(model.state_dict())))
    frozen = [p.numel() for p in model.parameters() if not p.requires_grad]
    if frozen and resume is None:
        experiment.console.print(f"frozen: {', '.join(args.trainer.freeze_modules or [])} "
                                 f"({sum(frozen):,} parameters, not trained)")
    trainer = _trainer(experiment, model, data, device, run_dir, trackers, config, dist,
                       [*callbacks, Heartbeat(record)] if dist.is_main else callbacks)
    if resume is not None:
        trainer.load_state_dict(resume)
        for tracker in trackers:  # each takes what it lacks of the restored history
            tracker.restore(trainer.history)
    return trainer


def finish(experiment: BaseExperiment[Any], trainer: Trainer, run_dir: Path,
           trackers: list[Tracker], test_split: Any) -> None:
    """After fit: the best weights back in the model (when asked), the test split evaluated,
    the summary to every tracker and the console. A diverged run fails here, files complete."""
    averaged = trainer.keep_evaluated_weights()
    trainer.release_data()  # the training data is freed before testing
    weights = _restore_best(trainer, run_dir, experiment.args)
    if averaged is not None:
        weights["averaged"] = averaged
    test = trainer.evaluate(test_split, "test") if test_split is not None else {}
    summary = _summary(trainer, test, weights)
    for tracker in trackers:
        tracker.log_summary(summary)
    _print_summary(experiment.console, trainer, test, weights, run_dir)
    if trainer.diverged:  # files are complete, but the run did not train: a failure
        raise ExpkitError(f"training diverged: {trainer.stop_reason}")


@dataclass
class Outcome:
    """How the run ended, as run.json and the exit code say it: failed until shown otherwise."""

    run_dir: Path
    record: RunRecord
    console: Any
    status: str = "failed"
    exit_code: int = 1

    def ended(self, status: str, exit_code: int) -> int:
        """Say how the run ended; returns its exit code."""
        self.status, self.exit_code = status, exit_code
        return exit_code


@contextlib.contextmanager
def failures_handled(outcome: Outcome) -> Iterator[None]:
    """Every way a run can fail, in one place: an ExpkitError is recorded and passed on; a stop
    before training, or a second Ctrl-C, ends the run `stopped` (no exception); a full disk
    names the last good checkpoint; anything else is a crash, its traceback in log.txt."""
    console, run_dir = outcome.console, outcome.run_dir
    try:
        yield
    except ExpkitError as e:
        outcome.record.update(error=str(e))
        raise
    except StoppedBeforeTraining as e:
        outcome.ended("stopped", EXIT_CODES.get(str(e), 1))
        console.print(f"stopped by {e} before training started; nothing to resume, run it again")
    except KeyboardInterrupt:
        outcome.ended("stopped", 130)
        console.print(f"aborted by a second SIGINT; the last checkpoint is from the end of an epoch. "
                      f"Resume with: {command('resume', str(run_dir))}")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise _failure(e, outcome.record, console, run_dir) from e
        last = run_dir / "checkpoints" / LAST
        kept = (f"the last good checkpoint is {last}; free some space, then: "
                f"{command('resume', str(run_dir))}"
                if last.is_file() else "no checkpoint was written yet")
        message = f"disk full: {e.strerror} writing {e.filename or 'a file'}; {kept}"
        outcome.record.update(error=message)
        raise ExpkitError(message) from None
    except Exception as e:
        raise _failure(e, outcome.record, console, run_dir) from e


def close_run(outcome: Outcome, trackers: list[Tracker], dist: Dist) -> None:
    """Whatever happened: run.json says how the run ended, every tracker is closed with that
    status, report.html is written (rank 0), the log file is closed."""
    outcome.record.update(status=outcome.status, ended=now(), exit_code=outcome.exit_code)
    for tracker in trackers:
        tracker.close(outcome.status)
    if dist.is_main:
        _report(outcome.run_dir, outcome.console)
    outcome.console.close()


def _failure(error: BaseException, record: RunRecord, console: Any, run_dir: Path) -> ExpkitError:
    """A crash inside a run: the traceback to log.txt and run.json, one line for the console."""
    console.write_log(traceback.format_exc())
    record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    return ExpkitError(f"run failed: {type(error).__name__}: {error} (traceback in "
                       f"{run_dir / 'log.txt'})")


def _report(run_dir: Path, console: Any) -> None:
    """report.html at the end of every run; a failure to write it is said, never fatal."""
    from expkit.reports.report import write_report

    try:
        write_report(run_dir)
    except Exception as e:  # the run's own files are complete; the report is a view of them
        console.print(f"warning: report.html not written: {type(e).__name__}: {e}")


def _trainer(experiment: BaseExperiment[Any], model: BaseModel, data: Any, device: torch.device,
             run_dir: Path, trackers: list[Tracker], config: dict[str, Any],
             dist: Dist = SINGLE, extra_callbacks: tuple[Callback, ...] | list[Callback] = ()
             ) -> Trainer:
    args: ExperimentArgs = experiment.args
    assert args.monitor is not None and args.monitor_mode is not None  # resolve_monitor ran
    t = args.trainer
    optimizer = experiment.build_optimizer(model)
    steps_per_epoch = -(-data.train.num_batches(args.batch_size) // t.accumulate_grad_batches)
    schedule = experiment.build_scheduler(optimizer, steps_per_epoch)
    callbacks: list[Callback] = _display(experiment) if dist.is_main else []
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(args.monitor, args.monitor_mode, t.early_stopping_patience,
                                       t.early_stopping_min_delta))
    info: DataInfo = data.info

    def extra() -> dict[str, Any]:
        ids = {k: v for tracker in trackers for k, v in tracker.run_ids().items()}
        return {"experiment_id": args.experiment_id, "config": config,
                "data_info": {"num_classes": info.num_classes, "input_shape": list(info.input_shape),
                              "state": info.state, "preprocess": info.preprocess},
                "trackers": ids}

    if t.save_checkpoints and dist.is_main:
        callbacks.append(Checkpointing(run_dir / "checkpoints", extra))
    callbacks += [*experiment.build_callbacks(run_dir), *extra_callbacks]
    artifacts = Artifacts(run_dir, trackers, dist.is_main)
    callbacks += [SaveArtifacts(artifacts, experiment.evaluation_artifacts), Tracking(trackers)]
    assert args.seed is not None
    return Trainer(model, optimizer, schedule, data, epochs=args.epochs, batch_size=args.batch_size,
                   eval_batch_size=args.eval_batch_size, device=device, seed=args.seed,
                   monitor=args.monitor, monitor_mode=args.monitor_mode, callbacks=callbacks,
                   precision=t.precision, accumulate_grad_batches=t.accumulate_grad_batches,
                   grad_clip_norm=t.grad_clip_norm, grad_norm=t.grad_norm,
                   grad_norm_by_module=t.grad_norm_by_module, ema_decay=t.ema_decay,
                   swa_start=t.swa_start,
                   timings=Timings(device, t.timing, t.sync_timing),
                   profiler=StepProfiler(
                       profiled_steps(t.profile, args.max_steps or args.epochs * steps_per_epoch),
                       run_dir / "profile" / "trace.json", device.type == "cuda")
                   if t.profile and dist.is_main else None,
                   compile=t.compile, channels_last=t.channels_last,
                   dist=dist, metrics=type(experiment).metrics, artifacts=artifacts,
                   max_steps=args.max_steps, eval_every=args.eval_every)


def _display(experiment: BaseExperiment[Any]) -> list[Callback]:
    """How a run shows its progress: a line per epoch; on a terminal a bar too (--progress);
    in a Jupyter notebook one line that updates in place (the epoch lines go to log.txt)."""
    progress, console = experiment.args.trainer.progress, experiment.console
    if progress is not False and in_notebook():
        return [NotebookProgress(), ConsoleLine(console, echo=False)]
    bar = progress or (progress is None and console.stream.isatty())
    return [*([ProgressBar()] if bar else []), ConsoleLine(console)]


def _restore_best(trainer: Trainer, run_dir: Path, args: ExperimentArgs) -> dict[str, Any]:
    """Put the best epoch's weights into the model when asked; says which weights are in it."""
    best_file = run_dir / "checkpoints" / BEST
    use_best = (args.trainer.restore_best and trainer.best_epoch is not None
                and trainer.best_epoch != trainer.epoch)
    if use_best and best_file.is_file():
        load_weights(trainer.model, load_checkpoint(best_file, trainer.device), best_file)
        return {"weights": "best", "weights_epoch": trainer.best_epoch}
    return {"weights": "last", "weights_epoch": trainer.epoch}


def _summary(trainer: Trainer, test: dict[str, float], weights: dict[str, Any]) -> dict[str, Any]:
    best = trainer.history[trainer.best_epoch - 1] if trainer.best_epoch else {}
    directions = {"loss": "min", **{name: direction(how, name) for name, how in trainer.metrics.items()}}
    return {"monitor": trainer.monitor, "mode": trainer.monitor_mode, "directions": directions,
            "best_epoch": trainer.best_epoch, "best": best, "final": trainer.history[-1],
            "test": test, **weights, "epochs_run": trainer.epoch, "stop_reason": trainer.stop_reason,
            "train_seconds": round(sum(row["epoch_time"] for row in trainer.history), 3),
            **({"time": trainer.times.summary()} if trainer.times.enabled else {}),
            **({"best_step": best.get("step"), "steps_run": trainer.steps} if trainer.step_based else {})}


def _print_summary(console: Any, trainer: Trainer, test: dict[str, float], weights: dict[str, Any],
                   run_dir: Path) -> None:
    console.print(f"training ended: {trainer.stop_reason}")
    parts = []
    if trainer.best_epoch is not None:
        parts.append(f"best {trainer.monitor} {trainer.best_value:.4f} ({trainer.at(trainer.best_epoch)})")
    parts += [f"{name} {value:.4f}" for name, value in test.items()]
    kind = f" {weights['averaged'].upper()}" if weights.get("averaged") else ""
    parts.append(f"with the {weights['weights']}{kind} weights ({trainer.at(weights['weights_epoch'])})")
    console.print("done: " + "  ".join(parts))
    if (spent := trainer.times.line()) is not None:
        console.print(spent)
    console.print(f"run directory: {run_dir}")
