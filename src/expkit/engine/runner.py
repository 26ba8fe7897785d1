"""One run from validated args to a finished run directory; also the continuation of a resume.

Order matters for "nothing half-written": device, seed and data are checked before the run
directory exists; from then on, every exit (finished, failed, stopped) is recorded in run.json.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import os
import random
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from expkit.config.args import flag_table
from expkit.data.base import DataInfo
from expkit.engine.callbacks import Heartbeat
from expkit.engine.experiment import BaseExperiment, ExperimentArgs, resolve_monitor
from expkit.errors import ExpkitError, UsageError
from expkit.models.base import BaseModel
from expkit.rundir.dirs import RunRecord, alive_fields, create_run_dir, now
from expkit.rundir.provenance import file_checksums, write_start_record
from expkit.tracking import optional_trackers
from expkit.tracking.artifacts import Artifacts, SaveArtifacts
from expkit.tracking.base import Tracker, Tracking
from expkit.tracking.local import LocalFiles
from expkit.training.callbacks import Callback, ConsoleLine
from expkit.training.checkpoint import (
    BEST,
    LAST,
    Checkpointing,
    check_state,
    load_checkpoint,
    load_weights,
)
from expkit.training.distributed import SINGLE, Dist, setup, teardown
from expkit.training.early_stopping import EarlyStopping
from expkit.training.loop import Trainer
from expkit.training.metrics import direction
from expkit.training.progress import ProgressBar
from expkit.utils.invocation import command, pinned

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def resolve_device(use_cuda: bool | None) -> torch.device:
    """The device `--use_cuda` asks for; True without CUDA is an error, not a silent fallback."""
    available = torch.cuda.is_available()
    if use_cuda and not available:
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise UsageError(f"--use_cuda: got true, but {why} (torch {torch.__version__}); "
                         "use --use_cuda=false, or install a CUDA build of torch (see README)")
    return torch.device("cuda" if (available if use_cuda is None else use_cuda) else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_file(path: Path, prefer: str = BEST) -> Path:
    """A checkpoint file given itself or a run directory (its best.pt, else last.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in (prefer, LAST, BEST):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise ExpkitError(f"{path}: no checkpoints/{BEST} or {LAST} in this folder")
    return path


class StoppedBeforeTraining(Exception):
    """A stop signal arrived before the trainer existed: nothing to save."""


class StopSignals:
    """Where SIGINT/SIGTERM go: to the trainer (stop after this step) once there is one."""

    def __init__(self, say: Any) -> None:
        self.say = say
        self.trainer: Trainer | None = None

    def __call__(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.trainer is None:
            raise StoppedBeforeTraining(name)
        if self.trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.trainer.stop_requested == name:  # the same again (a job script forwards it)
            return
        self.trainer.stop_requested = name
        self.say(f"{name} received: finishing this step, then saving a checkpoint")


@contextlib.contextmanager
def stop_on_signals(handler: StopSignals) -> Iterator[None]:
    """Route SIGINT/SIGTERM to `handler` inside the block (main thread only)."""

    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def make_deterministic() -> None:
    """Only deterministic kernels: bit-identical reruns on the same machine and versions."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def execute(experiment: BaseExperiment[Any], *, argv: list[str], run_dir: Path | None = None,
            resume: dict[str, Any] | None = None, sources: dict[str, str] | None = None,
            extra_record: dict[str, Any] | None = None,
            callbacks: list[Callback] | None = None) -> int:
    """Run (or, with `run_dir` and `resume`, continue) an experiment; returns the exit code.

    `callbacks` join the experiment's own (a sweep's trial reporting, for one).
    """
    resolve_monitor(type(experiment), experiment.args, resuming=resume is not None)
    device = resolve_device(experiment.args.use_cuda)
    dist = setup(device.type == "cuda")
    try:
        code = _execute(experiment, dist, device, argv=argv, run_dir=run_dir, resume=resume,
                        sources=sources, extra_record=extra_record, callbacks=callbacks or [])
        dist.barrier()  # ranks leave together, after rank 0 has written run.json
        return code
    finally:
        teardown()


def _execute(experiment: BaseExperiment[Any], dist: Dist, device: torch.device, *, argv: list[str],
             run_dir: Path | None, resume: dict[str, Any] | None, sources: dict[str, str] | None,
             extra_record: dict[str, Any] | None, callbacks: list[Callback]) -> int:
    args: ExperimentArgs = experiment.args
    console = experiment.console
    console.quiet = console.quiet or not dist.is_main
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if args.trainer.precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision: got 'fp16', which needs CUDA; use --precision=bf16 on CPU")
    seed_generated = args.seed is None
    if args.seed is None:
        args.seed = int(dist.from_main(secrets.randbelow(2**31)))  # one seed for all ranks
    if args.deterministic:
        make_deterministic()
    seed_everything(args.seed)
    init_state = None
    if args.trainer.init_from and resume is None:
        init_path = checkpoint_file(args.trainer.init_from)
        init_state = load_checkpoint(init_path)
    if not dist.is_main:
        dist.barrier()  # rank 0 downloads and caches the data first
    data = experiment.build_data()
    if dist.is_main:
        dist.barrier()
    check_state(data.state)
    fresh = resume is None  # a run directory made beforehand (a SLURM job's) starts fresh too
    if run_dir is None:
        made = create_run_dir(experiment.machine.results_dir, args.experiment_id) if dist.is_main else None
        run_dir = Path(dist.from_main(made))
    experiment.run_dir = run_dir
    record = RunRecord(run_dir, write=dist.is_main)
    if dist.is_main:
        console.attach(run_dir / "log.txt")
    if dist.enabled:
        extra_record = {**(extra_record or {}), "distributed": dist.record()}
    if fresh and dist.is_main:
        sources = dict(sources or {})
        if seed_generated:
            sources["seed"] = "generated"
        automatic = {"seed": str(args.seed)} if seed_generated else {}
        if args.use_cuda is None:  # auto: what this machine chose
            automatic["use_cuda"] = "true" if device.type == "cuda" else "false"
        record.update(experiment_id=args.experiment_id, argv=list(argv), status="running",
                      device=str(device), command=command(*pinned(list(argv), automatic)),
                      **alive_fields(),
                      flags={".".join(f.path): f.name for f in flag_table(type(args)).values()
                             if f.name != f.path[-1]},
                      started=now(), start_ns=time.time_ns(), ended=None, sources=sources,
                      **(extra_record or {}),
                      seed={"value": args.seed, "generated": seed_generated,
                            "seeded": ["python", "numpy", "torch"]},
                      data={"files": file_checksums(data.files, experiment.machine.cache_dir),
                            "streamed": data.streamed},
                      machine=experiment.machine.public(),
                      **write_start_record(run_dir, Path(inspect.getfile(type(experiment))).parent))
    elif dist.is_main:
        resumes = [*record.read().get("resumes", []),
                   {"at": now(), "argv": list(argv), **(extra_record or {})}]
        record.update(status="running", ended=None, resumes=resumes, **alive_fields())
    dataset = getattr(getattr(args, "dataset", None), "name", None)
    title = f"{args.experiment_id}{f' on {dataset}' if dataset else ''}  {run_dir.name}"
    trackers: list[Tracker] = [LocalFiles(run_dir, title=title,
                                          warn=console.print, epochs=args.epochs,
                                          max_steps=args.max_steps)
                               ] if dist.is_main else []
    status, exit_code = "failed", 1
    signals = StopSignals(console.print)
    try:
        with stop_on_signals(signals):
            if dist.is_main:  # one rank writes files and talks to trackers
                trackers += optional_trackers(
                    args.trainer, experiment.machine, args.experiment_id, run_dir,
                    (resume or {}).get("trackers") or {}, record.read(),
                    lambda name, fields: record.update(**{name: fields}), console.print)
                trackers += experiment.build_trackers(run_dir)
            config = args.model_dump(mode="json")
            for tracker in trackers:
                tracker.log_config(config)
            verb = "run" if fresh else "resume"
            ranks = f", {dist.world_size} ranks ({dist.backend})" if dist.enabled else ""
            console.print(f"{verb} {run_dir}  ({args.experiment_id}, {device}{ranks}, seed {args.seed}, "
                          f"{len(data.train)} train / {len(data.val or [])} val / "
                          f"{len(data.test or [])} test{', streamed from disk' if data.streamed else ''})")
            model = experiment.build_model(data.info)
            if init_state is not None and args.trainer.init_from is not None:
                load_weights(model, init_state, args.trainer.init_from)
            trainer = _trainer(experiment, model, data, device, run_dir, trackers, config, dist,
                               [*callbacks, Heartbeat(record)] if dist.is_main else callbacks)
            if resume is not None:
                trainer.load_state_dict(resume)
                for tracker in trackers:  # each takes what it lacks of the restored history
                    restore = getattr(tracker, "restore", None)
                    if restore is not None:
                        restore(trainer.history)
            signals.trainer = trainer
            trainer.fit()
            dist.barrier()  # rank 0's checkpoints are on disk before any rank reads best.pt
            if trainer.interrupted:
                status, exit_code = "stopped", EXIT_CODES.get(trainer.stop_requested or "", 1)
                console.print(f"stopped by {trainer.stop_requested} {trainer.stopped_at()}; checkpoint "
                              f"saved. Resume with: {command('resume', str(run_dir))}")
                return exit_code
            test_split = data.test
            del data  # with the trainer's release: the training data is freed before testing
            trainer.release_data()
            weights = _restore_best(trainer, run_dir, args)
            test = trainer.evaluate(test_split, "test") if test_split is not None else {}
            summary = _summary(trainer, test, weights)
            for tracker in trackers:
                tracker.log_summary(summary)
            _print_summary(console, trainer, test, weights, run_dir)
            if trainer.diverged:  # files are complete, but the run did not train: a failure
                raise ExpkitError(f"training diverged: {trainer.stop_reason}")
            status, exit_code = "finished", 0
            return 0
    except ExpkitError as e:
        record.update(error=str(e))
        raise
    except StoppedBeforeTraining as e:
        status, exit_code = "stopped", EXIT_CODES.get(str(e), 1)
        console.print(f"stopped by {e} before training started; nothing to resume, run it again")
        return exit_code
    except KeyboardInterrupt:
        status, exit_code = "stopped", 130
        console.print(f"aborted by a second SIGINT; the last checkpoint is from the end of an epoch. "
                      f"Resume with: {command('resume', str(run_dir))}")
        return exit_code
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise _failure(e, record, console, run_dir) from e
        last = run_dir / "checkpoints" / LAST
        kept = (f"the last good checkpoint is {last}; free some space, then: "
                f"{command('resume', str(run_dir))}"
                if last.is_file() else "no checkpoint was written yet")
        message = f"disk full: {e.strerror} writing {e.filename or 'a file'}; {kept}"
        record.update(error=message)
        raise ExpkitError(message) from None
    except Exception as e:
        raise _failure(e, record, console, run_dir) from e
    finally:
        record.update(status=status, ended=now(), exit_code=exit_code)
        for tracker in trackers:
            tracker.close(status)
        if dist.is_main:
            _report(run_dir, console)
        console.close()


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
    callbacks: list[Callback] = []
    if dist.is_main and (t.progress or (t.progress is None and experiment.console.stream.isatty())):
        callbacks.append(ProgressBar())
    if dist.is_main:
        callbacks.append(ConsoleLine(experiment.console))
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(args.monitor, args.monitor_mode, t.early_stopping_patience,
                                       t.early_stopping_min_delta))
    info: DataInfo = data.info

    def extra() -> dict[str, Any]:
        ids = {k: v for tracker in trackers for k, v in getattr(tracker, "ids", {}).items()}
        return {"experiment_id": args.experiment_id, "config": config,
                "data_info": {"num_classes": info.num_classes, "input_shape": list(info.input_shape),
                              "state": info.state},
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
                   grad_clip_norm=t.grad_clip_norm, compile=t.compile, channels_last=t.channels_last,
                   dist=dist, metrics=type(experiment).metrics, artifacts=artifacts,
                   max_steps=args.max_steps, eval_every=args.eval_every)


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
            **({"best_step": best.get("step"), "steps_run": trainer.steps} if trainer.step_based else {})}


def _print_summary(console: Any, trainer: Trainer, test: dict[str, float], weights: dict[str, Any],
                   run_dir: Path) -> None:
    console.print(f"training ended: {trainer.stop_reason}")
    parts = []
    if trainer.best_epoch is not None:
        parts.append(f"best {trainer.monitor} {trainer.best_value:.4f} ({trainer.at(trainer.best_epoch)})")
    parts += [f"{name} {value:.4f}" for name, value in test.items()]
    parts.append(f"with the {weights['weights']} weights ({trainer.at(weights['weights_epoch'])})")
    console.print("done: " + "  ".join(parts))
    console.print(f"run directory: {run_dir}")
