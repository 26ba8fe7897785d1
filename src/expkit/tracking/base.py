"""The Tracker protocol and the callback that feeds every tracker from the loop."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from expkit.errors import ExpkitError
from expkit.training.callbacks import Callback

if TYPE_CHECKING:
    from expkit.training.callbacks import TrainerView


class Tracker(Protocol):
    """Somewhere a run's config, metrics, artifacts and summary are recorded: every method a
    tracker may have. Subclass it (`class MyTracker(expkit.Tracker)`) and write the ones you
    need: the others do nothing. A tracker never writes run.json: what it wants kept there
    (its run's id, for a later resume or `expkit sync`) it returns from `record_fields`, and
    the run's record asks it."""

    def log_config(self, config: dict[str, Any]) -> None:
        """Record the validated arguments once, at the start (secrets already removed)."""
        return None

    def restore(self, rows: list[dict[str, float]]) -> None:
        """On resume, before training goes on: the history restored from the checkpoint. A
        tracker that may have lost evaluations to a kill sends what it lacks (LocalFiles
        rewrites history.csv, wandb and MLflow send the evaluations their server lacks)."""
        return None

    def log_epoch(self, rows: list[dict[str, float]]) -> None:
        """Record the newest evaluation; `rows` is the whole history so far, newest last."""
        return None

    def log_artifact(self, name: str, path: Path, value: Any, epoch: int) -> None:
        """An evaluation's artifact (a text or an image tensor), already saved at `path`."""
        return None

    def log_summary(self, summary: dict[str, Any]) -> None:
        """Record final and best values at the end."""
        return None

    def close(self, status: str) -> None:
        """Flush and release; `status` is finished, failed or stopped."""
        return None

    def run_ids(self) -> dict[str, str]:
        """This tracker's run id by tracker name ({"wandb": "3k2j1x"}): kept in checkpoints,
        so that a resume continues the same tracker run."""
        return {}

    def record_fields(self) -> dict[str, Any]:
        """What run.json keeps of this tracker's run, by key ({"mlflow": {"run_id": ...}}),
        asked once the run has started: `expkit sync` and resumes find it there."""
        return {}


#: every method of the Tracker protocol (a tracker that does not subclass it must have them all)
TRACKER_METHODS = tuple(name for name in vars(Tracker) if not name.startswith("_"))


def checked(tracker: Any, where: str) -> Tracker:
    """`tracker` when it has every Tracker method; else a clear error naming what it lacks."""
    missing = [name for name in TRACKER_METHODS if not callable(getattr(tracker, name, None))]
    if missing:
        raise ExpkitError(f"{where}: {type(tracker).__name__} lacks {', '.join(missing)}; subclass "
                          "expkit.Tracker (its methods do nothing until you write them)")
    return cast(Tracker, tracker)


def record_fields(trackers: list[Tracker]) -> dict[str, Any]:
    """What the trackers want run.json to keep, merged (the record writes it)."""
    return {key: value for tracker in trackers for key, value in tracker.record_fields().items()}


class Tracking(Callback):
    """Hands each epoch's metrics to every tracker."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """Log the epoch to each tracker."""
        for tracker in self.trackers:
            tracker.log_epoch(trainer.history)
