"""Callbacks a run adds to the loop for its run directory (the loop itself knows no run
directory)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

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


def standard_callbacks(run_dir: Path, out: TextIO | None = None,
                       checkpoints: bool = True) -> list[Callback]:
    """The callbacks every run has, for a Trainer built by hand (a benchmark, a script in the
    wild west): the console line per evaluation (to `out`, default stdout), checkpoints
    (RUN_DIR/checkpoints/last.pt and best.pt) unless `checkpoints=False`, and history.csv and
    history.png in `run_dir`."""
    from expkit.tracking.base import Tracking
    from expkit.tracking.local import LocalFiles
    from expkit.training.callbacks import ConsoleLine
    from expkit.training.checkpoint import Checkpointing
    from expkit.utils.console import Console

    callbacks: list[Callback] = [ConsoleLine(Console(out))]
    if checkpoints:
        callbacks.append(Checkpointing(Path(run_dir) / "checkpoints", lambda: {"config": {}}))
    return [*callbacks, Tracking([LocalFiles(Path(run_dir))])]
