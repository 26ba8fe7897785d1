"""Callbacks: the loop's extension points. A base with no-op hooks, and the console line per epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from expkit.console import Console
from expkit.rundirs import RunRecord, now

if TYPE_CHECKING:
    from expkit.training.loop import Trainer


class Callback:
    """Override the hooks you need; each fires where `expkit.training.loop` shows it.

    A callback with state (early stopping, say) returns it from `state_dict` and takes it
    back in `load_state_dict`; the checkpoint keeps it under the callback's `key`.
    """

    @property
    def key(self) -> str:
        """Name of this callback's state in a checkpoint."""
        return type(self).__name__

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Before each epoch's training batches."""

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After an epoch is trained, validated and appended to `trainer.history`."""

    def on_train_batch_end(self, trainer: Trainer, batch_index: int) -> None:
        """After each optimizer step (called only for callbacks that override it)."""

    def on_interrupt(self, trainer: Trainer) -> None:
        """A stop signal ended training mid-run: save what a resume needs."""

    def on_fit_end(self, trainer: Trainer) -> None:
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
        if name in skip:
            continue
        if name == "lr":
            parts.append(f"lr {value:.2e}")
        elif name == "epoch_time":
            parts.append(f"{value:.1f}s")
        else:
            parts.append(f"{name} {value:.4f}")
    return "  ".join(parts)


class ConsoleLine(Callback):
    """Prints one clean line per epoch (no carriage returns: fine in CI and SLURM logs)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """Print `epoch i/n  metric value ...` (step-based: `step s/n  epoch e  ...`)."""
        if trainer.max_steps is not None:
            width = len(str(trainer.max_steps))
            self.console.print(f"step {int(metrics['step']):>{width}}/{trainer.max_steps}  "
                               f"epoch {metrics['epoch']:.2f}  "
                               + format_metrics(metrics, skip=("epoch", "step")))
            return
        width = len(str(trainer.epochs))
        self.console.print(f"epoch {int(metrics['epoch']):>{width}}/{trainer.epochs}  "
                           + format_metrics(metrics))


class Heartbeat(Callback):
    """Refreshes run.json's heartbeat after every epoch (a run on another host whose heartbeat
    is stale shows as killed)."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """Write the time of this epoch's end."""
        self.record.update(heartbeat=now())
