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


def period(trainer: TrainerView) -> tuple[str, int | None, int]:
    """What the period now starting is called, where its count starts (the steps done, when
    step-based; None: count batches) and how long it is."""
    if trainer.max_steps is not None:  # step-based: this period's optimizer steps
        return (f"steps to {trainer.next_evaluation()}", trainer.steps,
                trainer.next_evaluation() - trainer.steps)
    return (f"epoch {trainer.epoch + 1}/{trainer.epochs}", None,
            trainer.train_split.num_batches(trainer.batch_size))


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

        label, self._offset, total = period(trainer)
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


class NotebookProgress(Callback):
    """In a Jupyter notebook: one line that updates in place, the batches of the period under
    way (running loss, examples/s) after the last finished period's metrics, instead of a line
    per epoch."""

    def __init__(self) -> None:
        from expkit.utils.notebook import LiveLine

        self.line = LiveLine()
        self.last = ""  # the last finished period's line
        self._label, self._total = "", 0
        self._offset: int | None = None
        self._started = self._shown = 0.0

    def on_epoch_start(self, trainer: TrainerView) -> None:
        """Say the period started."""
        self._label, self._offset, self._total = period(trainer)
        self._started = time.perf_counter()
        self._shown = 0.0
        self.line.show(self._text(f"{self._label}  0/{self._total}"))

    def on_train_batch_end(self, trainer: TrainerView, batch_index: int) -> None:
        """Twice a second: the batches done, the running loss and the examples per second."""
        now = time.perf_counter()
        if now - self._shown < _REFRESH:
            return
        self._shown = now
        done = batch_index + 1 if self._offset is None else trainer.steps - self._offset
        loss = trainer.running_mean("loss")
        rate = trainer.epoch_seen / max(now - self._started, 1e-9)
        self.line.show(self._text(f"{self._label}  {done}/{self._total}"
                                  + (f"  loss {loss:.4f}" if loss is not None else "")
                                  + f"  {rate:,.0f} ex/s"))

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """The period's metrics take the line."""
        from expkit.training.callbacks import epoch_line

        self.last = epoch_line(trainer, metrics)
        self.line.show(self.last)

    def _text(self, now: str) -> str:
        return f"{now}    |  {self.last}" if self.last else now
