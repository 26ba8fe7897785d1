"""Trackers: where metrics go. Local files always; wandb, TensorBoard and MLflow when switched on.

Imports: `training` (a tracker is fed by a callback), `rundir`, `reports` (history.png),
`config`, `utils`; each tracker's library only once it is switched on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from expkit.tracking.base import Tracker


def optional_trackers(trainer_args: Any, machine: Any, experiment_id: str, run_dir: Path,
                      saved_ids: dict[str, str], record: dict[str, Any],
                      say: Callable[[str], None]) -> list[Tracker]:
    """The trackers a run's --use_* flags switch on, each imported only then. `saved_ids` are
    the tracker run ids in the checkpoint being resumed ({} for a fresh run); `record` is
    run.json, whose ids serve when the checkpoint has none (a run sent by `expkit sync`)."""
    trackers: list[Tracker] = []
    if trainer_args.use_wandb:
        from expkit.tracking.wandb import WandbTracker

        trackers.append(WandbTracker(run_dir, machine.wandb, experiment_id, saved_ids.get("wandb"),
                                     say=say))
    if trainer_args.use_tensorboard:
        from expkit.tracking.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(run_dir / "tensorboard"))
    if trainer_args.use_mlflow:
        from expkit.tracking.mlflow import MlflowTracker

        trackers.append(MlflowTracker(
            run_dir, machine.mlflow, experiment_id,
            saved_ids.get("mlflow") or (record.get("mlflow") or {}).get("run_id"), say=say,
            log_checkpoints=trainer_args.mlflow_log_checkpoints,
            commit=(record.get("code") or {}).get("commit")))
    return trackers
