"""BaseExperiment, ExperimentArgs and TrainerArgs: the common arguments, and what an experiment builds.

A researcher's experiment subclasses both: its Args stitch the model and dataset args onto
ExperimentArgs; its class says how to build the data and the model. `expkit.engine.runner` does the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import torch
from pydantic import Field, model_validator

from expkit.config.args import Args, flag_table
from expkit.config.machine import MachineConfig
from expkit.data.base import DataInfo, DataSplits
from expkit.errors import UsageError
from expkit.models.base import BaseModel
from expkit.tracking.base import Tracker
from expkit.training.callbacks import Callback
from expkit.training.metrics import REPORT, Declared, Direction, direction, stateful
from expkit.training.optim import OptimizerArgs, Schedule, SchedulerArgs, build_optimizer, build_scheduler
from expkit.utils.console import Console
from expkit.utils.suggest import closest

if TYPE_CHECKING:
    from expkit.training.callbacks import TrainerView

#: bounds past which a value is a typo, not a plan (a run of a million epochs, a batch of 16M)
MAX_EPOCHS = 1_000_000
MAX_BATCH = 1 << 24
MAX_STEPS = 1 << 40


class TrainerArgs(Args):
    """How the loop trains: precision, accumulation, clipping, stopping, checkpoints, tracking."""

    precision: Literal["32", "bf16", "fp16"] = Field(
        "32", description="32-bit, or autocast to bf16 / fp16 (fp16: CUDA only, with a grad scaler)")
    accumulate_grad_batches: int = Field(1, ge=1, le=MAX_BATCH, description="batches per optimizer step")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the gradient norm to this; "
                                         "auto = no clipping")
    grad_norm: bool = Field(True, description="record the gradient norm (grad_norm) at each "
                            "evaluation, and where a diverged run's gradient first became non-finite")
    grad_norm_by_module: bool = Field(False, description="also record the gradient norm of each "
                                      "top-level module (grad_norm/<module>) at each evaluation")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="keep an exponential moving "
                                    "average of the weights with this decay (e.g. 0.999), updated "
                                    "every optimizer step; evaluation, the best epoch and the test "
                                    "use it; auto = off")
    swa_start: int | None = Field(None, ge=1, le=MAX_STEPS, description="stochastic weight "
                                  "averaging: the equal-weight average of the weights after every "
                                  "optimizer step from this epoch on (with --max_steps: this step), "
                                  "batch-norm statistics recomputed before each evaluation; "
                                  "evaluation, the best epoch and the test use it; auto = off")
    timing: bool = Field(True, description="record where the time goes: throughput and seconds "
                         "of data, compute, optimizer and evaluation per evaluation, the run's split")
    sync_timing: bool = Field(False, description="CUDA: synchronize the device at each timer (exact "
                              "times, slower steps)")
    profile: int | None = Field(None, ge=1, le=100_000, description="write a torch.profiler trace of "
                                "this many optimizer steps (after the first) to RUN_DIR/profile/"
                                "trace.json; auto = none")
    early_stopping_patience: int | None = Field(
        None, ge=1, le=MAX_EPOCHS,
        description="stop after this many epochs without --monitor improving; auto = off")
    early_stopping_min_delta: float = Field(0.0, ge=0, description="smallest change that counts "
                                            "as an improvement")
    restore_best: bool = Field(True, description="test (and leave in the model) the best epoch's "
                               "weights, not the last")
    save_checkpoints: bool = Field(True, description="write checkpoints/last.pt every epoch and "
                                   "best.pt on improvement (needed to resume)")
    init_from: Path | None = Field(None, description="start from the weights of this checkpoint or "
                                   "run directory (fine-tuning); auto = fresh weights")
    init_checkpoint: Literal["best", "last"] = Field(
        "best", description="which checkpoint of the --init_from run: best.pt or last.pt")
    init_modules: list[str] | None = Field(
        None, description="load only the tensors under these submodules (e.g. encoder,embed); "
        "the rest starts fresh; auto = every tensor, names and shapes as in this model")
    init_map: list[str] | None = Field(
        None, description="rename --init_from's tensors by prefix, OLD:NEW (e.g. "
        "classifier.:head.); several allowed")
    freeze_modules: list[str] | None = Field(
        None, description="keep these submodules' weights as they are (left out of the "
        "optimizer), e.g. encoder; auto = train everything")
    compile: bool = Field(False, description="compile the model with torch.compile (first epoch "
                          "pays the compile time)")
    channels_last: bool = Field(False, description="channels-last memory format for 4-D inputs "
                                "(faster CNNs on recent GPUs)")
    use_wandb: bool = Field(False, description="also log to Weights & Biases (config.yaml: wandb)")
    use_tensorboard: bool = Field(False, description="also write TensorBoard event files to "
                                  "RUN_DIR/tensorboard (needs the tensorboard package)")
    use_mlflow: bool = Field(False, description="also log to an MLflow tracking server "
                             "(config.yaml: mlflow; needs expkit[mlflow])")
    mlflow_log_checkpoints: bool = Field(False, description="with --use_mlflow: upload best.pt "
                                         "and last.pt as MLflow artifacts at the end")
    progress: bool | None = Field(None, description="progress bar per epoch; auto = on a terminal")


class ExperimentArgs(Args):
    """Arguments every experiment has."""

    experiment_id: str = Field(description="which registered experiment to run")
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, description="number of training epochs")
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="train for this many "
                                  "optimizer steps instead of --epochs; auto = by epochs")
    eval_every: int | None = Field(None, ge=1, le=MAX_STEPS, description="with --max_steps: "
                                   "evaluate (history row, checkpoint, early stopping, plot) every "
                                   "this many steps; auto = once per pass over the training data")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="training batch size")
    eval_batch_size: int = Field(1024, ge=1, le=MAX_BATCH, description="batch size for validation and test")
    seed: int | None = Field(None, ge=0, lt=2**32,
                             description="random seed; auto = a fresh one, recorded in config.json")
    use_cuda: bool | None = Field(None, description="train on the GPU; auto = when CUDA is available")
    deterministic: bool = Field(False, description="deterministic algorithms only (bit-identical "
                                "reruns; may be slower on GPU)")
    monitor: str | None = Field(None, description="metric that decides the best epoch; auto = "
                                "the experiment's default_monitor")
    monitor_mode: Literal["min", "max"] | None = Field(
        None, description="whether lower or higher --monitor is better; auto = the metric's "
        "declared direction (an explicit mode must agree with it)")
    optimizer: OptimizerArgs = Field(default_factory=OptimizerArgs)
    scheduler: SchedulerArgs = Field(default_factory=SchedulerArgs)
    trainer: TrainerArgs = Field(default_factory=TrainerArgs)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> ExperimentArgs:
        if self.eval_every is not None and self.max_steps is None:
            raise ValueError("--eval_every counts optimizer steps: it needs --max_steps "
                             "(an epoch-based run evaluates after every epoch)")
        t = self.trainer
        if t.ema_decay is not None and t.swa_start is not None:
            raise ValueError("--ema_decay and --swa_start are two ways to average the weights; "
                             "give one")
        last, unit = ((self.max_steps, "--max_steps") if self.max_steps is not None
                      else (self.epochs, "--epochs"))
        if t.swa_start is not None and t.swa_start > last:
            raise ValueError(f"--swa_start={t.swa_start} is past the end of training "
                             f"({unit}={last}): the average would never start")
        return self

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Check the flag table when an experiment's Args are defined (duplicate names fail here)."""
        super().__pydantic_init_subclass__(**kwargs)
        flag_table(cls)


A = TypeVar("A", bound=ExperimentArgs)

_SPLITS = ("train", "val")  # the splits whose metrics exist during training (test: at the end)


class BaseExperiment(Generic[A]):
    """One experiment: its Args class, how to build its data and model; `run()` does the rest.

    Override `build_data` and `build_model`. `build_optimizer`, `build_scheduler`,
    `build_callbacks` and `build_trackers` have defaults driven by the args; override them to
    change the recipe.
    """

    args_class: ClassVar[type[ExperimentArgs]]
    #: the metrics of this experiment, each with its direction: "max" when higher is better,
    #: "min" when lower is; a direction alone is the per-example mean of the sum `step` returns
    #: under that name, a `Metric` (expkit.training.metrics: r2, perplexity, ...) is computed over the
    #: whole split from its sums. Logged as train_<name>, val_<name>, test_<name>.
    metrics: ClassVar[Declared] = {"loss": "min", "acc": "max"}
    #: the metric that picks the best epoch when --monitor is not given
    default_monitor: ClassVar[str] = "val_acc"
    #: flags of a small, quick run of this experiment (seconds on a CPU): the test suite walks
    #: every registered experiment with them (with --seed=0), so adding one never breaks it
    smoke_args: ClassVar[tuple[str, ...]] = ("--epochs=1",)

    def __init__(self, args: A, machine: MachineConfig | None = None,
                 console: Console | None = None) -> None:
        self.args = args
        self.machine = machine or MachineConfig()
        self.console = console or Console()
        self.run_dir: Path | None = None  # set once the run directory exists
        self.seed_generated = False  # --seed was auto: the run drew one (and recorded it)

    def build_data(self) -> DataSplits:
        """Load the dataset (`self.machine.cache_dir` is where to cache it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_data()")

    def build_model(self, data: DataInfo) -> BaseModel:
        """The model to train, sized for `data` (input shape, number of classes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_model()")

    def build_optimizer(self, model: BaseModel) -> torch.optim.Optimizer:
        """The optimizer from `--optimizer`, `--lr`, `--weight_decay`, ... over the model's
        parameters, with `optimizer_kwargs()` on top."""
        return build_optimizer(self.args.optimizer, [p for p in model.parameters() if p.requires_grad],
                               **self.optimizer_kwargs())

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the optimizer beyond the built-in flags: the way to use a new
        field of an OptimizerArgs subclass that is not a keyword of the optimizer itself
        (`{"betas": (0.9, self.args.optimizer.beta2)}`), while `--optimizer`, `--lr`,
        `--weight_decay` and `--fused` keep working. Fields named like the optimizer's own
        keywords (`nesterov`, `amsgrad`) need nothing: they are passed on as they are."""
        return {}

    def build_scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                        ) -> Schedule | None:
        """The learning-rate schedule from `--scheduler`, `--warmup_epochs`, ... (None: constant).
        `steps_per_epoch` is optimizer steps per pass. In a step-based run (--max_steps) the
        per-epoch schedules step once per evaluation, and onecycle spans --max_steps.

        To add a schedule with its own flags, subclass SchedulerArgs (new fields, a wider
        `name`), use it in your Args, and override this method (as with `build_optimizer`).
        """
        assert self.args.monitor_mode is not None  # resolve_monitor ran
        epochs, max_steps = self.args.epochs, self.args.max_steps
        if max_steps is not None:  # step-based: the schedule's "epochs" are the evaluations
            steps_per_epoch = self.args.eval_every or steps_per_epoch
            epochs = -(-max_steps // steps_per_epoch)
        return build_scheduler(self.args.scheduler, optimizer, epochs, steps_per_epoch,
                               self.args.monitor_mode, total_steps=max_steps)

    def evaluation_artifacts(self, trainer: TrainerView) -> dict[str, str | torch.Tensor]:
        """Text and images to save at each evaluation (epoch end), by name: a `str`, or an
        image tensor (H, W) or (C, H, W) in [0, 1]. They land in RUN_DIR/artifacts/NAME/EPOCH.*,
        report.html, wandb and TensorBoard.

        Called after the evaluation, with `trainer.model` in eval mode and gradients off (the
        mode is restored after); `trainer.val_split` (None without one) and
        `trainer.train_split` are on `trainer.device`, so "input vs output" on validation
        examples is `trainer.model(trainer.val_split.x[:8])` (a named split:
        `trainer.val_split.tensors`). Runs on rank 0 only; leave the global RNGs alone (draw
        from a generator of your own) so that a resumed run stays exact."""
        return {}

    def build_trackers(self, run_dir: Path) -> list[Tracker]:
        """Extra trackers beyond the defaults (local files always, wandb with --use_wandb)."""
        return []

    def build_callbacks(self, run_dir: Path) -> list[Callback]:
        """Extra callbacks beyond the defaults (console, progress, early stopping, checkpoints)."""
        return []


def resolve_monitor(experiment_cls: type[BaseExperiment[Any]], args: ExperimentArgs,
                    resuming: bool = False) -> None:
    """Fill in `--monitor` (the experiment's default) and `--monitor_mode` (the metric's declared
    direction) before anything is created; a metric the experiment does not declare, or a mode
    that contradicts its direction, is a usage error. A resumed run keeps what it recorded."""
    declared = experiment_cls.metrics
    kinds = {f"{split}_{name}": direction(how, name) for split in _SPLITS
             for name, how in declared.items() if split != "train" or not stateful(how)}
    monitor = args.monitor or experiment_cls.default_monitor
    reported = {name for name, kind in kinds.items() if kind == REPORT}
    names: dict[str, Direction] = {name: kind for name, kind in kinds.items() if kind != "report"}
    if monitor in reported:
        raise UsageError(f"--monitor: got {monitor!r}, which {args.experiment_id} declares "
                         "for reporting only (\"report\": a reference, never monitored)",
                         hint=f"choose one of: {', '.join(names)}")
    evaluated = monitor.removeprefix("train_")
    if monitor.startswith("train_") and stateful(declared.get(evaluated)):
        raise UsageError(f"--monitor: got {monitor!r}, but {evaluated} is computed on the "
                         "evaluated splits only (val, test), not while training",
                         hint=f"monitor val_{evaluated}")
    if monitor not in names:
        near = closest(monitor, names)
        raise UsageError(f"--monitor: got {monitor!r}, which {args.experiment_id} does not compute"
                         + (f" (did you mean '{near}'?)" if near else ""),
                         hint=f"choose one of: {', '.join(names)}")
    mode = names[monitor]
    if args.monitor_mode is not None and args.monitor_mode != mode and not resuming:
        better = "higher" if mode == "max" else "lower"
        raise UsageError(f"--monitor_mode: got {args.monitor_mode!r}, but {monitor} is better "
                         f"{better} ({args.experiment_id} declares it {mode!r})",
                         hint=f"drop --monitor_mode (auto: {mode}), or monitor another metric")
    args.monitor, args.monitor_mode = monitor, args.monitor_mode or mode
