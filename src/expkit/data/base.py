"""BaseDataset: what an experiment's data must provide (its splits and DataInfo).

The split classes live in `expkit.data.splits` (in memory) and `expkit.data.stream` (read
from disk); the in-memory ones are importable from here too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from expkit.config.args import Args
from expkit.data.splits import (
    Batch,
    NamedSplit,
    Split,
    TokenSplit,
    examples_in,
    shard_of,
    split_indices,
    split_off,
)
from expkit.data.stream import StreamSplit
from expkit.errors import ExpkitError

__all__ = ["AnySplit", "BaseDataset", "Batch", "DataInfo", "DataSplits", "HoldoutArgs", "NamedSplit",
           "Split", "TokenSplit", "examples_in", "shard_of", "split_indices", "split_off"]

AnySplit = Split | StreamSplit  # in memory, or streamed from disk


@dataclass
class DataInfo:
    """What a model needs to know about its data; stored in checkpoints, so that a model is
    rebuilt from a checkpoint alone (`expkit.load_run`), without loading the data again.

    `num_classes` is what a classification dataset adds (None for any other task). `state` is
    whatever else the dataset computed that the model needs (a target scaler's mean and std, a
    vocabulary, class names): numbers, strings, tensors, and lists or dicts of them.
    `preprocess` says how a raw input becomes the model's input (`expkit.data.preprocess`:
    scale, normalize, reshape, vocabulary), so that an export is usable without expkit.
    """

    num_classes: int | None = None
    input_shape: tuple[int, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)
    preprocess: list[dict[str, Any]] = field(default_factory=list)

    def classes(self) -> int:
        """`num_classes`, for a model that classifies; an error when the dataset gives none."""
        if self.num_classes is None:
            raise ExpkitError("this dataset gives no num_classes (it is not a classification "
                              "dataset); build a model that does not need one")
        return self.num_classes

    @property
    def input_size(self) -> int:
        """Number of input features per example (product of `input_shape`)."""
        size = 1
        for dim in self.input_shape:
            size *= dim
        return size


@dataclass
class DataSplits(DataInfo):
    """What a dataset gives the loop: train/val/test splits, plus its DataInfo."""

    train: AnySplit = field(kw_only=True)
    val: AnySplit | None = field(kw_only=True)
    test: AnySplit | None = field(kw_only=True)
    files: list[Path] = field(default_factory=list, kw_only=True)  # files read, for the record
    streamed: bool = field(default=False, kw_only=True)  # read from disk per batch, not in memory
    #: augmentation of training batches on the device, `(batch, generator) -> batch`
    #: (expkit.data.augment); None: none
    augment: Callable[[Batch, torch.Generator], Batch] | None = field(default=None, kw_only=True)

    @property
    def info(self) -> DataInfo:
        """The DataInfo part alone."""
        return DataInfo(self.num_classes, self.input_shape, self.state, self.preprocess)


class BaseDataset(ABC):
    """A dataset: built from its validated Args and the machine's cache folder; `load()` gives splits.

    Subclasses implement `load()`. Splits held in memory (Split, NamedSplit) are served as
    whole-batch tensor slices by the loop; keep inputs pre-normalized, on the CPU.
    """

    def __init__(self, args: Args, cache_dir: Path) -> None:
        self.args = args
        self.cache_dir = Path(cache_dir)

    @abstractmethod
    def load(self) -> DataSplits:
        """Read (or download) the data and return it split into train/val/test."""


class HoldoutArgs(Args):
    """Which share of the examples is held out for validation and for the test."""

    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the rest held out for "
                                "validation")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of all examples held out "
                                 "for the test")

    def split(self, split: Split) -> tuple[Split, Split | None, Split]:
        """train, val (None at val_fraction=0) and test, the same every run: the test is
        split off first by a seeded permutation, then val from the rest by another."""
        rest, test = split_off(split, self.test_fraction, seed=0)
        if test is None:
            raise ExpkitError(f"--test_fraction={self.test_fraction} of {len(split)} examples "
                              "leaves no test example; raise it")
        train, val = split_off(rest, self.val_fraction, seed=1)
        return train, val, test
