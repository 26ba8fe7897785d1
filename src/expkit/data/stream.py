"""Data that does not fit the memory budget: read item by item through a DataLoader.

Same interface as an in-memory Split (len, batches, num_batches, to), so the loop does not
care. The epoch's order still comes from the trainer's generator (one randperm per epoch),
so resume and determinism work as in memory; workers, pinned memory and persistent workers
keep the reading off the training thread.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, Dataset, Subset

from expkit.config.args import Args
from expkit.data.augment import batch_seed
from expkit.data.splits import shard_of


class DataArgs(Args):
    """Where a dataset lives while training: in memory, or streamed from disk."""

    in_memory: bool | None = Field(None, description="hold the data in memory (fastest); false = "
                                   "stream from disk; auto = in memory if it fits the budget")
    memory_budget_mb: int | None = Field(None, ge=1, description="memory the data may take; "
                                         "auto = half of the memory available now")
    num_workers: int = Field(2, ge=0, description="DataLoader workers when streaming")


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or 4 GiB when it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def fits_in_memory(estimated_bytes: int, args: DataArgs) -> bool:
    """Whether to hold data of `estimated_bytes` in memory under `--in_memory`/`--memory_budget_mb`."""
    if args.in_memory is not None:
        return args.in_memory
    budget = args.memory_budget_mb * (1 << 20) if args.memory_budget_mb else available_memory() // 2
    return estimated_bytes <= budget


class _EpochBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of indices in an order set before each epoch (the loader is reused across epochs)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []  # indices, or (index, seed) pairs

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _SeededItems(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A dataset read by `(index, seed)`: torch's, Python's and numpy's RNGs are seeded with
    `seed` before the item is read, so its random transforms do not depend on which worker
    reads it or on what that worker read before (in the main process, the RNGs are put back)."""

    def __init__(self, dataset: Dataset[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        if seed is None:  # evaluation: no augmentation draws to pin down
            return self.dataset[index]
        in_worker = torch.utils.data.get_worker_info() is not None
        saved = None if in_worker else (torch.get_rng_state(), random.getstate(),
                                        np.random.get_state())
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        try:
            return self.dataset[index]
        finally:
            if saved is not None:
                torch.set_rng_state(saved[0])
                random.setstate(saved[1])
                np.random.set_state(saved[2])


class StreamSplit:
    """A split read from a map-style Dataset of (input, target) items through a DataLoader.

    `augmented=True` for a dataset whose items are random (per-item transforms, torchvision's
    or your own, drawing from torch's, Python's or numpy's global RNG): every training item's
    RNGs are then seeded from the trainer's generator (one draw per pass) and the item's place
    in the pass, so a resume, a rerun and any number of workers read the same items.
    """

    def __init__(self, dataset: Dataset[tuple[torch.Tensor, torch.Tensor]], num_workers: int = 2,
                 device: torch.device | None = None, augmented: bool = False) -> None:
        self.dataset, self.num_workers, self.augmented = dataset, num_workers, augmented
        self.device = device or torch.device("cpu")
        self._sampler = _EpochBatches()
        workers = min(self.num_workers, os.cpu_count() or 1)
        read: Dataset[tuple[torch.Tensor, torch.Tensor]] = _SeededItems(dataset) if augmented else dataset
        self._loader = DataLoader(read, batch_sampler=self._sampler, num_workers=workers,
                                  pin_memory=self.device.type == "cuda",
                                  persistent_workers=workers > 0)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def to(self, device: torch.device, memory_format: torch.memory_format | None = None
           ) -> StreamSplit:
        """The same stream, delivering batches on `device` (copied per batch, non-blocking)."""
        if torch.device(device) == self.device:
            return self
        return StreamSplit(self.dataset, self.num_workers, torch.device(device), self.augmented)

    def num_batches(self, batch_size: int) -> int:
        """How many batches one pass yields."""
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None, skip: int = 0,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Like Split.batches: in order, or shuffled by `generator`; `skip` leading batches;
        `shard=(rank, world_size)` reads only this rank's slice of each batch."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator else torch.arange(n)
        shards = (shard_of(order[i:i + batch_size], *shard)
                  for i in range(skip * batch_size, n, batch_size))
        batches: list[list[Any]] = [index.tolist() for index in shards if index is not None]
        if self.augmented:  # (index, seed): the item's seed, by its place in the pass
            pass_seed = int(torch.randint(1 << 62, (), generator=generator)) if generator else None
            first = skip * batch_size
            batches = [[(index, None if pass_seed is None else
                         batch_seed(pass_seed, first + b * batch_size + j, shard[0]))
                        for j, index in enumerate(batch)] for b, batch in enumerate(batches)]
        self._sampler.batches = batches
        if not self._sampler.batches:
            return
        for x, y in self._loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def subset(split: StreamSplit, indices: Sequence[int]) -> StreamSplit:
    """The examples at `indices` of a stream, as a stream."""
    return StreamSplit(Subset(split.dataset, list(indices)), split.num_workers, split.device,
                       split.augmented)
