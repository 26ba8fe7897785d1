"""Evaluation: the declared metrics of a model over a whole split, for the trainer (val, test)
and for a loaded run (`LoadedRun.evaluate`). Sums are added up on the device and reduced once;
stateful metrics (torchmetrics) are updated per batch and computed once."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch

from expkit.data.base import AnySplit, examples_in
from expkit.errors import ExpkitError
from expkit.models.base import BaseModel
from expkit.training.distributed import SINGLE, Dist
from expkit.training.metrics import Declared, Stateful, compute_metrics, produced, stateful


def reduce_sums(dist: Dist, sums: dict[str, torch.Tensor], seen: int, device: torch.device
                ) -> tuple[dict[str, torch.Tensor], int]:
    """Metric sums and example count over all ranks (one all-reduce); as is in one process."""
    if not dist.enabled:
        return sums, seen
    total = dist.all_sum(torch.stack([*(v.double() for v in sums.values()),
                                      torch.tensor(float(seen), device=device, dtype=torch.float64)]))
    return dict(zip(sums, total[:-1], strict=True)), int(total[-1].item())


def metric_values(metrics: Declared, sums: dict[str, torch.Tensor], count: int, prefix: str
                  ) -> dict[str, float]:
    """The declared metrics of a split from its sums, named `<prefix>_<metric>` (one device
    sync for all of them)."""
    if not sums:
        return {}
    totals = dict(zip(sums, torch.stack([v.double() for v in sums.values()]).tolist(), strict=True))
    return {f"{prefix}_{name}": value for name, value in compute_metrics(metrics, totals, count).items()}


class Evaluator:
    """The declared metrics of a model over a whole split: sums added up on the device and
    reduced once, stateful metrics (torchmetrics) updated per batch and computed once. The
    trainer evaluates val and test with it; `LoadedRun.evaluate` any split after a run."""

    def __init__(self, model: BaseModel, metrics: Declared, *, batch_size: int,
                 device: torch.device, dist: Dist = SINGLE,
                 autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
                 memory_format: torch.memory_format | None = None) -> None:
        self.model, self.metrics, self.batch_size = model, metrics, batch_size
        self.device, self.dist, self.autocast, self.memory_format = device, dist, autocast, memory_format
        self.states: dict[str, Stateful] = {}  # copies of the stateful metrics, on the device

    @torch.inference_mode()
    def __call__(self, split: AnySplit, prefix: str) -> dict[str, float]:
        """The metrics over `split`, named `<prefix>_<metric>`."""
        self.model.eval()
        split = split.to(self.device, self.memory_format)
        sums: dict[str, torch.Tensor] = {}
        states = self._reset_states()
        updated: set[str] = set()
        seen = 0
        for batch in split.batches(self.batch_size, shard=self.dist.shard()):
            with self.autocast():
                _, batch_sums = self.model.step(batch)
            for name, value in batch_sums.items():
                if name in states:  # a stateful metric's inputs: update(*value) or (**value)
                    (states[name].update(**value) if isinstance(value, dict)
                     else states[name].update(*value))
                    updated.add(name)
                else:
                    sums[name] = sums[name] + value if name in sums else value.double()
            seen += examples_in(batch)
        means = metric_values(self.metrics, *reduce_sums(self.dist, sums, seen, self.device), prefix)
        # a stateful metric reduces itself across ranks (torchmetrics: in compute)
        return means | {f"{prefix}_{name}": float(state.compute())
                        for name, state in states.items() if name in updated}

    def _reset_states(self) -> dict[str, Stateful]:
        """The stateful metrics, emptied for an evaluation (each a copy of the declared object,
        on the device)."""
        for name, how in self.metrics.items():
            if stateful(how) and name not in self.states:
                state = copy.deepcopy(how)
                to = getattr(state, "to", None)
                self.states[name] = to(self.device) if callable(to) else state
        for state in self.states.values():
            state.reset()
        return self.states


def check_monitor(monitor: str | None, metrics: Declared, sums: list[str], returned: list[str],
                  has_val: bool) -> None:
    """The monitored metric is among those the first batch's `step` output gives (`sums`: the
    tensor sums; `returned`: every name it returned); else a clear error listing them."""
    known = [f"train_{name}" for name in produced(metrics, sums, evaluation=False)]
    if has_val:
        known += [f"val_{name}" for name in produced(metrics, returned)]
    if monitor not in known:
        raise ExpkitError(f"--monitor: got {monitor!r}, which this experiment does not "
                          f"log; choose one of: {', '.join(known)}")
