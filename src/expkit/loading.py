"""load_run: a finished (or stopped) run back in Python: its args, its model with weights, its history."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from expkit.data.base import DataInfo
from expkit.errors import ExpkitError
from expkit.experiment import ExperimentArgs
from expkit.models.base import BaseModel
from expkit.registry import Registry
from expkit.results import read_history
from expkit.resume import read_run_config
from expkit.training.checkpoint import BEST, LAST, load_checkpoint, load_weights


@dataclass
class LoadedRun:
    """A run directory, loaded: validated args, the model with weights, and the per-epoch history."""

    run_dir: Path
    args: ExperimentArgs
    model: BaseModel
    history: list[dict[str, float]]
    checkpoint: Path
    epoch: int  # the epoch whose weights are in `model`


def load_run(run_dir: str | Path, checkpoint: Literal["best", "last"] = "best",
             device: str | torch.device = "cpu", registry: str | None = None) -> LoadedRun:
    """Load a run for use elsewhere (notebooks, wild_west scripts); the model is in eval mode.

    `registry` names a module with EXPERIMENTS (default: every installed expkit registry).
    """
    run_dir = Path(run_dir).absolute()
    config = read_run_config(run_dir)
    reg = Registry.from_module(registry) if registry else Registry.from_entry_points()
    experiment_cls = reg.load(config["experiment_id"])
    args = experiment_cls.args_class.model_validate(config)
    path = run_dir / "checkpoints" / (BEST if checkpoint == "best" else LAST)
    if not path.is_file():
        raise ExpkitError(f"{run_dir}: no checkpoints/{path.name} (checkpoint={checkpoint!r})")
    state = load_checkpoint(path, device)
    info = state.get("data_info") or {}
    if not info:
        raise ExpkitError(f"{path}: has no data_info; it was not written by an expkit run")
    data_info = DataInfo(info.get("num_classes"), tuple(info["input_shape"]), info.get("state") or {})
    model = experiment_cls(args).build_model(data_info)
    load_weights(model, state, path)
    model.to(device).eval()
    return LoadedRun(run_dir, args, model, _history(run_dir, state), path, int(state["epoch"]))


def _history(run_dir: Path, state: dict[str, Any]) -> list[dict[str, float]]:
    return read_history(run_dir) or list(state.get("history", []))
