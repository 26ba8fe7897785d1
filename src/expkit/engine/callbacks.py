"""Callbacks a run adds to the loop for its run directory (the loop itself knows no run
directory)."""

from __future__ import annotations

from expkit.rundir.dirs import RunRecord, now
from expkit.training.callbacks import Callback, TrainerView


class Heartbeat(Callback):
    """Refreshes run.json's heartbeat after every epoch (a run on another host whose heartbeat
    is stale shows as killed)."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """Write the time of this epoch's end."""
        self.record.update(heartbeat=now())
