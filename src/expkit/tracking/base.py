"""The Tracker protocol and the callback that feeds every tracker from the loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from expkit.training.callbacks import Callback

if TYPE_CHECKING:
    from expkit.training.callbacks import TrainerView


class Tracker(Protocol):
    """Somewhere a run's config, per-epoch metrics and final summary are recorded."""

    def log_config(self, config: dict[str, Any]) -> None:
        """Record the validated arguments once, at the start (secrets already removed)."""

    def log_epoch(self, rows: list[dict[str, float]]) -> None:
        """Record the newest epoch; `rows` is the whole history so far, newest last."""

    def log_summary(self, summary: dict[str, Any]) -> None:
        """Record final and best values at the end."""

    def close(self, status: str) -> None:
        """Flush and release; `status` is finished, failed or stopped."""

    # Optional: `restore(rows)` is called on resume with the history restored from the
    # checkpoint, before training goes on; a tracker that may have lost epochs to a kill
    # sends them there (LocalFiles rewrites history.csv, wandb sends what its files lack).


class Tracking(Callback):
    """Hands each epoch's metrics to every tracker."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """Log the epoch to each tracker."""
        for tracker in self.trackers:
            tracker.log_epoch(trainer.history)
