"""BaseDataset: what an experiment's data must provide, and whole-batch slicing of in-memory tensors.

Data that fits in memory is one pre-normalized tensor per split; a batch is an index
slice of it (no per-item __getitem__, no collate): most of the speed on small datasets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from expkit.args import Args
from expkit.errors import ExpkitError

if TYPE_CHECKING:
    from expkit.data.stream import StreamSplit


@dataclass
class Split:
    """One split held in memory: inputs `x` and targets `y` of equal length."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} targets")

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device: torch.device, memory_format: torch.memory_format | None = None) -> Split:
        """This split on `device` (a no-op when already there), 4-D inputs in `memory_format`."""
        x = self.x.to(device)
        if memory_format is not None and x.dim() == 4:
            x = x.contiguous(memory_format=memory_format)
        return Split(x, self.y.to(device))

    def batches(self, batch_size: int, generator: torch.Generator | None = None, skip: int = 0,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in order (views, no copy), or shuffled by `generator` (one randperm per epoch).

        `skip` leaves out the first batches of the pass (a resume in the middle of an epoch).
        `shard=(rank, world_size)`: this rank's slice of every batch (see `shard_of`).
        """
        n = len(self)
        rank, world = shard
        if generator is None and world == 1:
            for start in range(skip * batch_size, n, batch_size):
                yield self.x[start:start + batch_size], self.y[start:start + batch_size]
            return
        order = (torch.randperm(n, generator=generator) if generator is not None
                 else torch.arange(n)).to(self.x.device)
        for start in range(skip * batch_size, n, batch_size):
            index = shard_of(order[start:start + batch_size], rank, world)
            if index is not None:
                yield self.x[index], self.y[index]

    def num_batches(self, batch_size: int) -> int:
        """How many batches one pass yields."""
        return -(-len(self) // batch_size)


def shard_of(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor | None:
    """Rank `rank`'s share of one global batch of indices: every `world`-th, from `rank` on.

    None (on every rank alike) when the batch has fewer items than there are ranks: under
    DDP every rank must step together, so such a short last batch is left out.
    """
    if world == 1:
        return batch
    return batch[rank::world] if len(batch) >= world else None


AnySplit = Union[Split, "StreamSplit"]  # in memory, or streamed from disk


@dataclass
class DataInfo:
    """What a model needs to know about its data; stored in checkpoints, so that a model is
    rebuilt from a checkpoint alone (`expkit.load_run`), without loading the data again.

    `num_classes` is what a classification dataset adds (None for any other task). `state` is
    whatever else the dataset computed that the model needs (a target scaler's mean and std, a
    vocabulary, class names): numbers, strings, tensors, and lists or dicts of them.
    """

    num_classes: int | None = None
    input_shape: tuple[int, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)

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

    @property
    def info(self) -> DataInfo:
        """The DataInfo part alone."""
        return DataInfo(self.num_classes, self.input_shape, self.state)


class BaseDataset(ABC):
    """A dataset: built from its validated Args and the machine's cache folder; `load()` gives splits.

    Subclasses implement `load()`. Splits held in memory are served as whole-batch tensor
    slices by the loop; keep inputs pre-normalized float tensors and targets int64.
    """

    def __init__(self, args: Args, cache_dir: Path) -> None:
        self.args = args
        self.cache_dir = Path(cache_dir)

    @abstractmethod
    def load(self) -> DataSplits:
        """Read (or download) the data and return it split into train/val/test."""


def split_indices(n: int, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, split-off) indices: `fraction` of `n` by a seeded permutation (same every run)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_off = round(n * fraction)
    return order[n_off:], order[:n_off]


def split_off(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split | None]:
    """Split `fraction` of `split` off as a second split, by a seeded permutation (same every run)."""
    keep, off = split_indices(len(split), fraction, seed)
    if len(off) == 0:
        return split, None
    return Split(split.x[keep], split.y[keep]), Split(split.x[off], split.y[off])
