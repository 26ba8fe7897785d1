"""expkit: write the model, the dataset and the step; get args, CLI, loop, metrics and runs for free.

The public face: everything an experiment, a notebook or a script needs is importable from
`expkit` itself (`from expkit import BaseExperiment, ExperimentArgs, BaseModel, ...`).
Importing expkit imports nothing else: each name is imported when first used, so that
`import expkit` does not import torch (`expkit.runs()` never does; `expkit.load_run` does).

The packages, bottom to top (each imports only those below it; tests/test_layout.py checks):
`utils`, `config` (no torch) · `rundir`, `reports` (the run directory and its pages, no
torch) · `data`, `models`, `training` (the loop) · `tracking` · `engine` (a run from args to
its directory) · `slurm`, `sweep` · `cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expkit.cli import run_cli
    from expkit.config.args import Args
    from expkit.config.machine import load_machine_config
    from expkit.data import augment, preprocess
    from expkit.data.base import (
        AnySplit,
        BaseDataset,
        Batch,
        DataInfo,
        DataSplits,
        HoldoutArgs,
        NamedSplit,
        Split,
        TokenSplit,
        split_indices,
        split_off,
    )
    from expkit.data.download import DownloadError, download_verified
    from expkit.data.idx import idx_shape, open_idx_memmap, read_idx
    from expkit.data.stream import DataArgs, StreamSplit, fits_in_memory, subset
    from expkit.engine.api import resume, run
    from expkit.engine.callbacks import standard_callbacks
    from expkit.engine.experiment import MAX_EPOCHS, BaseExperiment, ExperimentArgs, TrainerArgs
    from expkit.engine.export import export_run
    from expkit.engine.loading import load_export, load_run
    from expkit.errors import ExpkitError, UsageError
    from expkit.models.base import BaseModel
    from expkit.rundir.results import Run, Runs, runs
    from expkit.tracking.base import Tracker
    from expkit.training.callbacks import Callback, TrainerView
    from expkit.training.checkpoint import Checkpointing, save_checkpoint
    from expkit.training.early_stopping import EarlyStopping
    from expkit.training.loop import Trainer
    from expkit.training.metrics import Declared, Metric, perplexity, r2
    from expkit.training.optim import OptimizerArgs, SchedulerArgs
    from expkit.utils.files import atomic_write

#: public name -> the module that defines it (imported on first use)
_HOME = {
    **dict.fromkeys(["BaseExperiment", "ExperimentArgs", "TrainerArgs", "MAX_EPOCHS"],
                    "expkit.engine.experiment"),
    **dict.fromkeys(["load_run", "load_export"], "expkit.engine.loading"),
    "export_run": "expkit.engine.export",
    **dict.fromkeys(["run", "resume"], "expkit.engine.api"),
    "standard_callbacks": "expkit.engine.callbacks",
    **dict.fromkeys(["runs", "Run", "Runs"], "expkit.rundir.results"),
    "Args": "expkit.config.args",
    "BaseModel": "expkit.models.base",
    **dict.fromkeys(["BaseDataset", "DataInfo", "DataSplits", "Split", "NamedSplit", "TokenSplit",
                     "AnySplit", "Batch", "HoldoutArgs", "split_off", "split_indices"],
                    "expkit.data.base"),
    **dict.fromkeys(["StreamSplit", "DataArgs", "fits_in_memory", "subset"], "expkit.data.stream"),
    **dict.fromkeys(["read_idx", "idx_shape", "open_idx_memmap"], "expkit.data.idx"),
    **dict.fromkeys(["DownloadError", "download_verified"], "expkit.data.download"),
    "augment": "expkit.data",  # the module: augment.inputs, random_crop, hflip, noise
    "preprocess": "expkit.data",  # the module: scale, normalize, reshape, vocabulary, apply
    **dict.fromkeys(["Callback", "TrainerView"], "expkit.training.callbacks"),
    "Trainer": "expkit.training.loop",
    **dict.fromkeys(["Checkpointing", "save_checkpoint"], "expkit.training.checkpoint"),
    "EarlyStopping": "expkit.training.early_stopping",
    **dict.fromkeys(["Metric", "Declared", "r2", "perplexity"], "expkit.training.metrics"),
    **dict.fromkeys(["OptimizerArgs", "SchedulerArgs"], "expkit.training.optim"),
    "Tracker": "expkit.tracking.base",
    **dict.fromkeys(["ExpkitError", "UsageError"], "expkit.errors"),
    "run_cli": "expkit.cli",
    "load_machine_config": "expkit.config.machine",
    "atomic_write": "expkit.utils.files",
}

__all__ = [
    "MAX_EPOCHS",
    "AnySplit",
    "Args",
    "BaseDataset",
    "BaseExperiment",
    "BaseModel",
    "Batch",
    "Callback",
    "Checkpointing",
    "DataArgs",
    "DataInfo",
    "DataSplits",
    "Declared",
    "DownloadError",
    "EarlyStopping",
    "ExperimentArgs",
    "ExpkitError",
    "HoldoutArgs",
    "Metric",
    "NamedSplit",
    "OptimizerArgs",
    "Run",
    "Runs",
    "SchedulerArgs",
    "Split",
    "StreamSplit",
    "TokenSplit",
    "Tracker",
    "Trainer",
    "TrainerArgs",
    "TrainerView",
    "UsageError",
    "__version__",
    "atomic_write",
    "augment",
    "download_verified",
    "export_run",
    "fits_in_memory",
    "idx_shape",
    "load_export",
    "load_machine_config",
    "load_run",
    "open_idx_memmap",
    "perplexity",
    "preprocess",
    "r2",
    "read_idx",
    "resume",
    "run",
    "run_cli",
    "runs",
    "save_checkpoint",
    "split_indices",
    "split_off",
    "standard_callbacks",
    "subset",
]


def __getattr__(name: str) -> Any:
    """Each public name, imported from its module when first asked for; `expkit.__version__`
    is the installed package's version."""
    if name == "__version__":
        return importlib.import_module("expkit.utils.version").version()
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'expkit' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = getattr(module, name, None)
    if value is None:  # a module of the package (`expkit.augment`)
        value = importlib.import_module(f"{home}.{name}")
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    """The public names, for completion in a notebook."""
    return sorted(__all__)
