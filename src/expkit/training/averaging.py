"""Weight averaging: an exponential moving average of the weights (`--ema_decay`, as timm and
Keras keep one) or stochastic weight averaging (`--swa_start`: the equal-weight average of the
weights from an epoch, or a step, on), kept in a copy of the model beside it.

Both are updated after every optimizer step. When one is on, evaluation, the choice of the best
epoch and the test use the averaged weights, and a checkpoint holds both sets: "model" is the
averaged weights (what the run's metrics describe, what `load_run` and `--init_from` load),
"trained" the optimizer's. Resume restores both and the count, so a resumed run ends
bit-identical to an uninterrupted one.

EMA averages the floating-point buffers too (batch-norm's running statistics, as timm does).
SWA copies them, then recomputes batch-norm statistics over the training split (in order, no
augmentation, the model's other layers in eval mode, so no random draw) before each evaluation:
an average of weights has no running statistics of its own.
"""

from __future__ import annotations

import copy
from typing import Any, Generic, Literal, TypeVar

import torch
from torch import nn

from expkit.data.base import AnySplit

Kind = Literal["ema", "swa"]
M = TypeVar("M", bound=nn.Module)


def weight_average(model: M, ema_decay: float | None, swa_start: int | None
                   ) -> WeightAverage[M] | None:
    """The average the flags ask for (None: neither flag)."""
    if ema_decay is not None:
        return WeightAverage(model, "ema", decay=ema_decay)
    if swa_start is not None:
        return WeightAverage(model, "swa", start=swa_start)
    return None


class WeightAverage(Generic[M]):
    """An average of `model`'s weights in a copy of it (`self.model`, never trained)."""

    def __init__(self, model: M, kind: Kind, *, decay: float = 0.0, start: int = 1) -> None:
        self.kind, self.decay, self.start = kind, decay, start
        self.model = _frozen_copy(model)
        self.count = 0  # optimizer steps averaged in
        self._params = _floating(model.parameters()), _floating(self.model.parameters())
        buffers = list(model.buffers()), list(self.model.buffers())
        self._float_buffers = _floating(buffers[0]), _floating(buffers[1])
        self._other_buffers = ([b for b in buffers[0] if not b.is_floating_point()],
                               [b for b in buffers[1] if not b.is_floating_point()])
        self._batch_norms = [m for m in self.model.modules()
                             if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @torch.no_grad()
    def update(self, at: int) -> None:
        """After an optimizer step; `at` is the epoch (step-based runs: the step) it is part of,
        which decides whether SWA has started."""
        trained, averaged = self._params
        if self.kind == "ema":  # a += (1 - decay) (w - a)
            self.count += 1
            for source, into in (self._params, self._float_buffers):
                if into:
                    torch._foreach_lerp_(into, source, 1.0 - self.decay)
            _copy(*self._other_buffers)
            return
        if at < self.start:
            return
        self.count += 1
        if self.count == 1:
            _copy(trained, averaged)
        elif trained:  # the running mean: a + (w - a) / n
            torch._foreach_lerp_(averaged, trained, 1.0 / self.count)
        _copy(*self._float_buffers)
        _copy(*self._other_buffers)

    @torch.no_grad()
    def ready(self, train: AnySplit, batch_size: int) -> None:
        """Make the averaged model what evaluation should see: before SWA starts, the trained
        weights themselves; after, with its batch-norm statistics recomputed over `train`."""
        if self.kind == "ema":
            return
        if self.count == 0:
            for pair in (self._params, self._float_buffers, self._other_buffers):
                _copy(*pair)
            return
        if not self._batch_norms or len(train) == 0:
            return
        momenta = [bn.momentum for bn in self._batch_norms]
        for bn in self._batch_norms:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative mean over the pass's batches
            bn.train()
        try:
            for batch in train.batches(batch_size):
                self.model.step(batch)  # type: ignore[operator]
        finally:
            for bn, momentum in zip(self._batch_norms, momenta, strict=True):
                bn.momentum = momentum
            self.model.eval()

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the averaged weights: the kind and the count."""
        return {"kind": self.kind, "count": self.count}

    def load(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Continue from a checkpoint's averaged weights and `state()`."""
        self.model.load_state_dict(weights)
        self.count = int(state["count"])


def _copy(source: list[torch.Tensor], into: list[torch.Tensor]) -> None:
    """`into[i] = source[i]`, in place, for every i."""
    if source:
        torch._foreach_copy_(into, source)


def _floating(tensors: Any) -> list[torch.Tensor]:
    return [t for t in tensors if t.is_floating_point()]


def _frozen_copy(model: M) -> M:
    """A copy of `model` for evaluation only: no gradients, eval mode, not compiled (a module's
    pickled state leaves out the compiled wrapper, which belongs to the original)."""
    twin = copy.deepcopy(model)
    twin.requires_grad_(False)
    return twin.eval()
