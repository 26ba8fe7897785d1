"""BaseExperiment and ExperimentArgs: the common arguments, and one run from args to run directory.

A researcher's experiment subclasses both: its Args stitch the model and dataset args onto
ExperimentArgs; its class says how to build the data and the model. The rest is here.
"""

from __future__ import annotations

import random
import secrets
import time
import traceback
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import torch
from pydantic import Field

from expkit.args import Args, flag_table
from expkit.config import MachineConfig
from expkit.console import Console
from expkit.data.base import DataSplits
from expkit.errors import ExpkitError, UsageError
from expkit.models.base import BaseModel
from expkit.runs import create_run_dir
from expkit.tracking.base import Tracker, Tracking
from expkit.tracking.local import LocalFiles
from expkit.training.callbacks import Callback, ConsoleLine
from expkit.training.loop import Trainer
from expkit.training.optim import OptimizerArgs, SchedulerArgs, build_optimizer, build_scheduler


class ExperimentArgs(Args):
    """Arguments every experiment has."""

    experiment_id: str = Field(description="which registered experiment to run")
    epochs: int = Field(10, ge=1, description="number of training epochs")
    batch_size: int = Field(64, ge=1, description="training batch size")
    eval_batch_size: int = Field(1024, ge=1, description="batch size for validation and test")
    seed: int | None = Field(None, ge=0, lt=2**32,
                             description="random seed; auto = a fresh one, recorded in config.json")
    use_cuda: bool | None = Field(None, description="train on the GPU; auto = when CUDA is available")
    monitor: str = Field("val_acc", description="metric that decides the best epoch")
    monitor_mode: Literal["min", "max"] = Field("max", description="whether lower or higher "
                                                "--monitor is better")
    optimizer: OptimizerArgs = Field(default_factory=OptimizerArgs)
    scheduler: SchedulerArgs = Field(default_factory=SchedulerArgs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Check the flag table when an experiment's Args are defined (duplicate names fail here)."""
        super().__pydantic_init_subclass__(**kwargs)
        flag_table(cls)


A = TypeVar("A", bound=ExperimentArgs)


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


class BaseExperiment(Generic[A]):
    """One experiment: its Args class, how to build its data and model; `run()` does the rest.

    Override `build_data` and `build_model`. `build_optimizer`, `build_callbacks` and
    `build_trackers` have defaults driven by the args; override them to change the recipe.
    """

    args_class: ClassVar[type[ExperimentArgs]]

    def __init__(self, args: A, machine: MachineConfig, console: Console | None = None) -> None:
        self.args = args
        self.machine = machine
        self.console = console or Console()

    def build_data(self) -> DataSplits:
        """Load the dataset (`self.machine.cache_dir` is where to cache it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_data()")

    def build_model(self, data: DataSplits) -> BaseModel:
        """The model to train, sized for `data` (input shape, number of classes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_model()")

    def build_optimizer(self, model: BaseModel) -> torch.optim.Optimizer:
        """The optimizer from `--optimizer`, `--lr`, ... over the model's parameters."""
        return build_optimizer(self.args.optimizer, model.parameters())

    def build_trackers(self, run_dir: Path) -> list[Tracker]:
        """Where metrics go; local files always."""
        return [LocalFiles(run_dir, title=f"{self.args.experiment_id}  {run_dir.name}")]

    def build_callbacks(self, run_dir: Path) -> list[Callback]:
        """Callbacks besides tracking: the per-epoch console line."""
        return [ConsoleLine(self.console)]

    def run(self) -> Path:
        """Train, validate and test; returns the run directory (results/<id>/<time>-<id>/)."""
        args = self.args
        device = resolve_device(args.use_cuda)
        if args.seed is None:
            args.seed = secrets.randbelow(2**31)
        seed_everything(args.seed)
        data = self.build_data()
        run_dir = create_run_dir(self.machine.results_dir, args.experiment_id)
        self.console.attach(run_dir / "log.txt")
        trackers = self.build_trackers(run_dir)
        status = "failed"
        try:
            for tracker in trackers:
                tracker.log_config(args.model_dump(mode="json"))
            self.console.print(f"run {run_dir}  ({args.experiment_id}, {device}, seed {args.seed}, "
                               f"{len(data.train)} train / {len(data.val or [])} val / "
                               f"{len(data.test or [])} test)")
            model = self.build_model(data)
            optimizer = self.build_optimizer(model)
            schedule = build_scheduler(args.scheduler, optimizer, args.epochs,
                                       data.train.num_batches(args.batch_size), args.monitor_mode)
            trainer = Trainer(model, optimizer, schedule, data, epochs=args.epochs,
                              batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                              device=device, seed=args.seed, monitor=args.monitor,
                              monitor_mode=args.monitor_mode,
                              callbacks=[*self.build_callbacks(run_dir), Tracking(trackers)])
            started = time.perf_counter()
            trainer.fit()
            test = trainer.evaluate(data.test, "test") if data.test is not None else {}
            summary = self._summary(trainer, test, time.perf_counter() - started)
            for tracker in trackers:
                tracker.log_summary(summary)
            self._print_summary(trainer, test, run_dir)
            status = "finished"
            return run_dir
        except ExpkitError:
            raise
        except Exception as e:
            self.console.write_log(traceback.format_exc())
            raise ExpkitError(f"run failed: {type(e).__name__}: {e} (traceback in "
                              f"{run_dir / 'log.txt'})") from e
        finally:
            for tracker in trackers:
                tracker.close(status)
            self.console.close()

    def _summary(self, trainer: Trainer, test: dict[str, float], seconds: float) -> dict[str, Any]:
        best = trainer.history[trainer.best_epoch - 1] if trainer.best_epoch else {}
        return {"monitor": trainer.monitor, "mode": trainer.monitor_mode,
                "best_epoch": trainer.best_epoch, "best": best, "final": trainer.history[-1],
                "test": test, "epochs_run": trainer.epoch, "stop_reason": trainer.stop_reason,
                "train_seconds": round(seconds, 3)}

    def _print_summary(self, trainer: Trainer, test: dict[str, float], run_dir: Path) -> None:
        parts = []
        if trainer.best_epoch is not None:
            parts.append(f"best {trainer.monitor} {trainer.best_value:.4f} "
                         f"(epoch {trainer.best_epoch})")
        parts += [f"{name} {value:.4f}" for name, value in test.items()]
        self.console.print("done: " + "  ".join(parts))
        self.console.print(f"run directory: {run_dir}")
