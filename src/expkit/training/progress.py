"""A progress bar per epoch on a terminal (batches, running loss, examples/s), drawn by rich.

Only on a terminal: in CI, nohup or SLURM logs the console line per epoch is all there is,
with no carriage returns. The loss shown is read at most every 0.5 s (it syncs the device).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from expkit.training.callbacks import Callback

if TYPE_CHECKING:
    from expkit.training.callbacks import TrainerView

_REFRESH = 0.5  # seconds between loss reads


class ProgressBar(Callback):
    """A transient rich progress bar for the training batches of each epoch."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._offset: int | None = None  # step-based: the steps done when the period began
        self._last = 0.0

    def on_epoch_start(self, trainer: TrainerView) -> None:
        """Start this epoch's bar."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if trainer.max_steps is not None:  # step-based: this period's optimizer steps
            label = f"steps to {trainer.next_evaluation()}"
            self._offset = trainer.steps
            total = trainer.next_evaluation() - trainer.steps
        else:
            label, self._offset = f"epoch {trainer.epoch + 1}/{trainer.epochs}", None
            total = trainer.train_split.num_batches(trainer.batch_size)
        self._progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                  transient=True)
        self._task = self._progress.add_task("train", total=total, info="")
        self._progress.start()
        self._started = time.perf_counter()
        self._last = 0.0

    def on_train_batch_end(self, trainer: TrainerView, batch_index: int) -> None:
        """Advance; refresh the loss and throughput twice a second."""
        now = time.perf_counter()
        info = None
        if now - self._last >= _REFRESH:
            self._last = now
            loss = trainer.running_mean("loss")
            rate = trainer.epoch_seen / max(now - self._started, 1e-9)
            info = f"loss {loss:.4f}  {rate:,.0f} ex/s" if loss is not None else ""
        done = batch_index + 1 if self._offset is None else trainer.steps - self._offset
        self._progress.update(self._task, completed=done,
                              **({"info": info} if info is not None else {}))

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """Remove the bar; the console line takes its place."""
        self._stop()

    def on_interrupt(self, trainer: TrainerView) -> None:
        """Remove the bar."""
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
