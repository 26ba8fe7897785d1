"""Splits held in memory, and whole-batch slicing of them.

Data that fits in memory is one pre-normalized tensor per split; a batch is an index
slice of it (no per-item __getitem__, no collate): most of the speed on small datasets.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

#: what a split yields per batch: `(x, y)` from a Split, a dict of named tensors from a NamedSplit
Batch = tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


class Split:
    """One split held in memory: inputs `x` and targets `y` of equal length, any dtype and
    shape. A batch is `(x, y)`, index slices of both (no per-item __getitem__, no collate)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"split has {len(x)} inputs but {len(y)} targets")
        self.tensors: tuple[torch.Tensor, ...] = (x, y)

    @property
    def x(self) -> torch.Tensor:
        """The inputs."""
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        """The targets."""
        return self.tensors[1]

    def _pack(self, parts: tuple[torch.Tensor, ...]) -> Batch:
        """One batch from the rows of each tensor."""
        return parts

    def _like(self, tensors: tuple[torch.Tensor, ...]) -> Split:
        """A split of the same kind (and names) holding `tensors`."""
        return Split(*tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def take(self, index: torch.Tensor) -> Split:
        """The rows at `index` of every tensor, as a split of the same kind."""
        return self._like(tuple(t[index] for t in self.tensors))

    def to(self, device: torch.device, memory_format: torch.memory_format | None = None) -> Split:
        """This split on `device` (a no-op when already there), 4-D float tensors in `memory_format`."""
        moved = []
        for t in self.tensors:
            t = t.to(device)
            if memory_format is not None and t.dim() == 4 and t.is_floating_point():
                t = t.contiguous(memory_format=memory_format)
            moved.append(t)
        return self._like(tuple(moved))

    def batches(self, batch_size: int, generator: torch.Generator | None = None, skip: int = 0,
                shard: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        """Batches in order (views, no copy), or shuffled by `generator` (one randperm per epoch).

        `skip` leaves out the first batches of the pass (a resume in the middle of an epoch).
        `shard=(rank, world_size)`: this rank's slice of every batch (see `shard_of`).
        """
        n = len(self)
        rank, world = shard
        if generator is None and world == 1:
            for start in range(skip * batch_size, n, batch_size):
                yield self._pack(tuple(t[start:start + batch_size] for t in self.tensors))
            return
        order = (torch.randperm(n, generator=generator) if generator is not None
                 else torch.arange(n)).to(self.tensors[0].device)
        for start in range(skip * batch_size, n, batch_size):
            index = shard_of(order[start:start + batch_size], rank, world)
            if index is not None:
                yield self._pack(tuple(t[index] for t in self.tensors))

    def num_batches(self, batch_size: int) -> int:
        """How many batches one pass yields."""
        return -(-len(self) // batch_size)


class NamedSplit(Split):
    """A split of several named tensors of equal length (inputs, masks, per-example weights,
    targets: any names); a batch is a dict of them, sliced alike:

        NamedSplit(x=features, y=labels, weight=weights)   # step gets batch["weight"], ...
    """

    def __init__(self, **tensors: torch.Tensor) -> None:
        if not tensors:
            raise ValueError("a NamedSplit needs at least one tensor")
        lengths = {name: len(t) for name, t in tensors.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError("split's tensors differ in length: "
                             + ", ".join(f"{name} {n}" for name, n in lengths.items()))
        self.names = tuple(tensors)
        self.tensors = tuple(tensors.values())

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[self.names.index(name)]

    @property
    def x(self) -> torch.Tensor:
        """The tensor named "x"."""
        return self["x"]

    @property
    def y(self) -> torch.Tensor:
        """The tensor named "y"."""
        return self["y"]

    def _pack(self, parts: tuple[torch.Tensor, ...]) -> Batch:
        return dict(zip(self.names, parts, strict=True))

    def _like(self, tensors: tuple[torch.Tensor, ...]) -> Split:
        return NamedSplit(**dict(zip(self.names, tensors, strict=True)))


class TokenSplit(Split):
    """One long 1-D tensor of token ids, served as windows of `block_size` tokens: a batch is
    `(x, y)`, both (batch, block_size), `y` being `x` shifted by one token (next-token targets).

    One pass has `(len(tokens) - 1) // block_size` windows. Training draws their start
    positions at random from the trainer's generator (one `randint` per pass, so a resume in
    the middle of a pass draws the same windows); evaluation reads consecutive windows from the
    start. Windows are gathered by index arithmetic on the device, no per-item Python.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        if tokens.dim() != 1:
            raise ValueError(f"a token split is one 1-D tensor, got shape {tuple(tokens.shape)}")
        if len(tokens) <= block_size:
            raise ValueError(f"a token split needs more than block_size={block_size} tokens, "
                             f"got {len(tokens)}")
        self.tokens, self.block_size = tokens, block_size
        self.tensors = (tokens,)

    @property
    def x(self) -> torch.Tensor:
        """The token ids."""
        return self.tokens

    @property
    def y(self) -> torch.Tensor:
        """The token ids (the targets are the inputs shifted by one)."""
        return self.tokens

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def _like(self, tensors: tuple[torch.Tensor, ...]) -> Split:
        return TokenSplit(tensors[0], self.block_size)

    def take(self, index: torch.Tensor) -> Split:
        """Not defined for a stream: split it by position (`tokens[:n]`, `tokens[n:]`)."""
        raise TypeError("a token split is split by position: TokenSplit(tokens[:n], ...), "
                        "TokenSplit(tokens[n:], ...)")

    def to(self, device: torch.device, memory_format: torch.memory_format | None = None) -> Split:
        """This split on `device` (a no-op when already there)."""
        return TokenSplit(self.tokens.to(device), self.block_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None, skip: int = 0,
                shard: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        """Windows in batches: random starts from `generator` (training), consecutive ones
        without it (evaluation). `skip` and `shard` as for Split."""
        n, block = len(self), self.block_size
        device = self.tokens.device
        if generator is None:
            starts = torch.arange(n) * block
        else:  # any start that leaves block + 1 tokens
            starts = torch.randint(0, len(self.tokens) - block, (n,), generator=generator)
        starts, offsets = starts.to(device), torch.arange(block + 1, device=device)
        rank, world = shard
        for first in range(skip * batch_size, n, batch_size):
            index = shard_of(starts[first:first + batch_size], rank, world)
            if index is not None:
                rows = self.tokens[index.unsqueeze(1) + offsets]
                yield rows[:, :-1], rows[:, 1:]


def examples_in(batch: Batch) -> int:
    """How many examples a batch holds (the length of its first tensor)."""
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return len(first)


def shard_of(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor | None:
    """Rank `rank`'s share of one global batch of indices: every `world`-th, from `rank` on.

    None (on every rank alike) when the batch has fewer items than there are ranks: under
    DDP every rank must step together, so such a short last batch is left out.
    """
    if world == 1:
        return batch
    return batch[rank::world] if len(batch) >= world else None


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
    return split.take(keep), split.take(off)
