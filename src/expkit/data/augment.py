"""Augmentation of training batches on the device, as batched tensor operations.

A dataset sets `DataSplits(augment=...)`: a function of `(batch, generator)` that returns the
batch transformed. The loop calls it on every training batch (never on validation or test),
with a generator of the batch's device seeded from the trainer's generator, the batch's place
in the pass and the rank: a resume, a rerun and `--deterministic` see the same augmented
batches, and no per-item Python runs. `inputs(...)` builds one from functions of the inputs:

    DataSplits(train=..., augment=augment.inputs(augment.random_crop(2), augment.hflip()))
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from expkit.data.splits import Batch

#: a function of one batch's inputs (N, C, H, W) and a generator on their device
InputTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
#: what `DataSplits.augment` holds: a whole batch in, the augmented batch out
BatchTransform = Callable[[Batch, torch.Generator], Batch]

_GOLDEN = 0x9E3779B97F4A7C15  # spreads consecutive batch numbers over the seed space


def batch_seed(pass_seed: int, batch: int, rank: int = 0) -> int:
    """The seed of one training batch's augmentation: its pass's seed (one draw from the
    trainer's generator per pass), its index in the pass and the rank (ranks augment their own
    shards differently)."""
    return (pass_seed + (batch * 1024 + rank + 1) * _GOLDEN) % (1 << 63)


def augmented(augment: BatchTransform | None, batch: Batch, pass_seed: int, index: int,
              rank: int, device: torch.device) -> Batch:
    """A training batch as `augment` draws it, from a generator seeded by the pass, the batch's
    index in it and the rank (`batch` itself when there is no augmentation)."""
    if augment is None:
        return batch
    return augment(batch, torch.Generator(device).manual_seed(batch_seed(pass_seed, index, rank)))


def inputs(*transforms: InputTransform) -> BatchTransform:
    """A batch transform that applies `transforms` in order to the inputs: the first tensor of
    an `(x, y)` batch, or the tensor named "x" of a dict batch."""
    def apply(batch: Batch, generator: torch.Generator) -> Batch:
        if isinstance(batch, dict):
            x = batch["x"]
            for transform in transforms:
                x = transform(x, generator)
            return {**batch, "x": x}
        x = batch[0]
        for transform in transforms:
            x = transform(x, generator)
        return (x, *batch[1:])
    return apply


def random_crop(padding: int) -> InputTransform:
    """Pad each image by `padding` pixels (zeros) and cut a random window of its size: shifts
    of up to `padding` pixels, per example, by one gather."""
    def crop(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        dy, dx = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator,
                               device=x.device)
        rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
        index = torch.arange(n, device=x.device)[:, None, None]
        cropped = padded.permute(0, 2, 3, 1)[index, rows, cols]  # (n, h, w, c)
        return cropped.permute(0, 3, 1, 2).contiguous(memory_format=_format_of(x))
    return crop


def hflip(p: float = 0.5) -> InputTransform:
    """Mirror each image left to right with probability `p`."""
    def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mask = torch.rand(len(x), generator=generator, device=x.device) < p
        return torch.where(mask[:, None, None, None], x.flip(-1), x)
    return flip


def noise(std: float) -> InputTransform:
    """Add Gaussian noise of standard deviation `std` to every input value."""
    def add(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return add


def _format_of(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() else torch.contiguous_format)
