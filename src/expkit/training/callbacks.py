"""Callbacks: the loop's extension points. A base with no-op hooks, and the console line per epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from expkit.utils.console import Console

if TYPE_CHECKING:
    import torch

    from expkit.data.base import AnySplit, Batch
    from expkit.models.base import BaseModel


class TrainerView(Protocol):
    """What a callback sees of the loop: `expkit.training.loop.Trainer` is the one
    implementation. Named here, not imported, so that the loop can import its callbacks.
    A callback may set `should_stop` and `stop_reason`; the rest is for reading."""

    model: BaseModel  # the model the optimizer trains
    evaluated_model: BaseModel  # what evaluation sees: the average with --ema_decay/--swa_start
    epoch: int  # evaluations done (epochs; step-based: evaluation periods)
    epochs: int  # evaluations in all
    steps: int  # optimizer steps taken
    max_steps: int | None  # step-based runs only
    batch_size: int
    epoch_seen: int  # training examples seen in this epoch so far
    history: list[dict[str, float]]  # one row of metrics per evaluation
    monitor: str
    best_epoch: int | None
    best_value: float | None
    should_stop: bool
    stop_reason: str
    train_split: AnySplit
    val_split: AnySplit | None  # the validation split (None: the dataset has none)
    device: torch.device  # where the model and the splits are
    augment: Callable[..., Batch] | None  # the dataset's augmentation of training batches
    released: bool  # release_data() was called: the splits are gone
    artifacts: Any  # the run's Artifacts: `trainer.artifacts.save(name, value)`

    @property
    def step_based(self) -> bool:
        """Whether the run counts optimizer steps (--max_steps) rather than epochs."""

    def at(self, evaluation: int | None = None) -> str:
        """'epoch 3' or 'step 400': where evaluation number `evaluation` (default: the last) fell."""

    def next_evaluation(self) -> int:
        """The optimizer step (step-based) or epoch at which the next evaluation happens."""

    def running_mean(self, name: str = "loss") -> float | None:
        """The mean of a training metric over this epoch so far (None before the first batch)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs: weights, optimizer, position, history, RNG states."""

    def weights(self) -> dict[str, Any]:
        """The weights a checkpoint keeps ("model": those evaluation sees; "trained" too when
        they differ)."""


class Callback:
    """Override the hooks you need; each fires where `expkit.training.loop` shows it.

    A callback with state (early stopping, say) returns it from `state_dict` and takes it
    back in `load_state_dict`; the checkpoint keeps it under the callback's `key`.
    """

    @property
    def key(self) -> str:
        """Name of this callback's state in a checkpoint."""
        return type(self).__name__

    def on_fit_start(self, trainer: TrainerView) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: TrainerView) -> None:
        """Before each epoch's training batches."""

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """After an epoch is trained, validated and appended to `trainer.history`."""

    def on_train_batch_end(self, trainer: TrainerView, batch_index: int) -> None:
        """After each optimizer step (called only for callbacks that override it)."""

    def on_interrupt(self, trainer: TrainerView) -> None:
        """A stop signal ended training mid-run: save what a resume needs."""

    def on_fit_end(self, trainer: TrainerView) -> None:
        """After the last epoch, however training ended (not after an interrupt)."""

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs to restore this callback."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def format_metrics(metrics: dict[str, float], skip: tuple[str, ...] = ("epoch",)) -> str:
    """`name value` pairs for one console line: 4 significant decimals, lr in scientific form."""
    parts = []
    for name, value in metrics.items():
        if name in skip or (name.endswith("_time") and name != "epoch_time"):
            continue  # the parts of the time: in history.csv and metrics.json
        if name == "lr":
            parts.append(f"lr {value:.2e}")
        elif name == "epoch_time":
            parts.append(f"{value:.1f}s")
        elif name.endswith("_per_second"):
            parts.append(f"{value:.0f} {name.removesuffix('_per_second')}/s")
        else:
            parts.append(f"{name} {value:.4f}")
    return "  ".join(parts)


class ConsoleLine(Callback):
    """Prints one clean line per epoch (no carriage returns: fine in CI and SLURM logs).

    With `echo=False` (a notebook, where a live line shows progress) the line goes to log.txt
    only."""

    def __init__(self, console: Console, echo: bool = True) -> None:
        self.console = console
        self.echo = echo

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """Print `epoch i/n  metric value ...` (step-based: `step s/n  epoch e  ...`)."""
        line = epoch_line(trainer, metrics)
        if self.echo:
            self.console.print(line)
        else:
            self.console.write_log(line)


def epoch_line(trainer: TrainerView, metrics: dict[str, float]) -> str:
    """`epoch i/n  metric value ...` (step-based: `step s/n  epoch e  ...`): what a finished
    evaluation period reads as on the console, in log.txt and in a notebook's live line."""
    if trainer.max_steps is not None:
        width = len(str(trainer.max_steps))
        return (f"step {int(metrics['step']):>{width}}/{trainer.max_steps}  "
                f"epoch {metrics['epoch']:.2f}  " + format_metrics(metrics, skip=("epoch", "step")))
    width = len(str(trainer.epochs))
    return f"epoch {int(metrics['epoch']):>{width}}/{trainer.epochs}  " + format_metrics(metrics)
