"""load_run: a finished (or stopped) run back in Python: its args, its model with weights, its
history, and its experiment (to rebuild its data and evaluate the model on any split)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from expkit.config.machine import MachineConfig
from expkit.config.registry import Registry
from expkit.data.base import AnySplit, DataInfo
from expkit.engine.experiment import BaseExperiment, ExperimentArgs
from expkit.engine.resume import read_run_config
from expkit.errors import ExpkitError
from expkit.models.base import BaseModel
from expkit.rundir.results import read_history
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
    experiment: BaseExperiment[Any]  # built from the run's args: `experiment.build_data()`

    def evaluate(self, split: AnySplit, prefix: str = "test", batch_size: int | None = None
                 ) -> dict[str, float]:
        """The experiment's declared metrics of the loaded model over `split` (as the run
        computed its val and test metrics), named `<prefix>_<metric>`."""
        from expkit.training.evaluate import Evaluator

        device = next(self.model.parameters(), torch.empty(0)).device
        evaluator = Evaluator(self.model, type(self.experiment).metrics, device=device,
                              batch_size=batch_size or self.args.eval_batch_size)
        return evaluator(split, prefix)


def load_run(run_dir: str | Path, checkpoint: Literal["best", "last"] = "best",
             device: str | torch.device = "cpu", registry: str | Registry | None = None,
             machine: MachineConfig | None = None) -> LoadedRun:
    """Load a run for use elsewhere (notebooks, wild_west scripts); the model is in eval mode.

    The model is rebuilt from the checkpoint alone (its data_info holds the dataset's state),
    without the data. `registry` names a module with EXPERIMENTS (default: every installed
    expkit registry); `machine` is the machine config the experiment gets (its cache_dir is
    where `run.experiment.build_data()` reads the data).
    """
    run_dir = Path(run_dir).absolute()
    config = read_run_config(run_dir)
    experiment_cls = _registry(registry).load(config["experiment_id"])
    args = experiment_cls.args_class.model_validate(config)
    path = run_dir / "checkpoints" / (BEST if checkpoint == "best" else LAST)
    if not path.is_file():
        raise ExpkitError(f"{run_dir}: no checkpoints/{path.name} (checkpoint={checkpoint!r})")
    state = load_checkpoint(path, device)
    info = state.get("data_info") or {}
    if not info:
        raise ExpkitError(f"{path}: has no data_info; it was not written by an expkit run")
    data_info = as_data_info(info)
    experiment = experiment_cls(args, machine)
    model = experiment.build_model(data_info)
    load_weights(model, state, path)
    model.to(device).eval()
    return LoadedRun(run_dir, args, model, _history(run_dir, state), path, int(state["epoch"]),
                     experiment)


def as_data_info(info: dict[str, Any]) -> DataInfo:
    """A checkpoint's (or an export's) data_info as the DataInfo `build_model` takes."""
    return DataInfo(info.get("num_classes"), tuple(info["input_shape"]), info.get("state") or {},
                    info.get("preprocess") or [])


def _registry(registry: str | Registry | None) -> Registry:
    """The experiments to load from: a Registry, a module with EXPERIMENTS, or (None) every
    installed registry."""
    if isinstance(registry, Registry):
        return registry
    return Registry.from_module(registry) if registry else Registry.from_entry_points()


#: an export folder's dataset state (expkit export): the DataInfo `build_model` was given
DATA_INFO = "data_info.json"
_TENSOR = "__tensor__"  # how a tensor in the dataset's state is written as JSON


def jsonable(value: Any) -> Any:
    """A checkpoint's data_info as JSON: a tensor as {"__tensor__": values, "dtype": ...}."""
    if isinstance(value, torch.Tensor):
        return {_TENSOR: value.tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return torch.tensor(value[_TENSOR], dtype=getattr(torch, value["dtype"]))
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def load_export(folder: str | Path, device: str | torch.device = "cpu",
                registry: str | Registry | None = None) -> BaseModel:
    """The model of an `expkit export` folder, rebuilt by its experiment's `build_model` (the
    experiment's code must be installed) with model.safetensors' weights, in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file() or not (folder / DATA_INFO).is_file():
        raise ExpkitError(f"{folder}: not an export with model.safetensors and {DATA_INFO}",
                          hint="write one with: expkit export RUN_DIR --format=safetensors")
    config = read_run_config(folder)
    experiment_cls = _registry(registry).load(config["experiment_id"])
    info = _from_json(json.loads((folder / DATA_INFO).read_text()))
    data_info = as_data_info(info)
    model: BaseModel = experiment_cls(experiment_cls.args_class.model_validate(config)
                                      ).build_model(data_info)
    load_weights(model, {"model": load_file(str(weights))}, weights)
    return model.to(device).eval()


def _history(run_dir: Path, state: dict[str, Any]) -> list[dict[str, float]]:
    return read_history(run_dir) or list(state.get("history", []))
