"""Where training stands inside its passes over the training split and its evaluation periods:
where a pass starts (a resumed one replays its draws and skips what it trained), where a
step-based period pauses, and what a period stopped by a signal keeps so that a resume finishes
it exactly. A part of `expkit.training.loop.Trainer`, kept apart from the loop's steps."""

from __future__ import annotations

import time
from typing import Any

import torch

from expkit.data.base import AnySplit
from expkit.training.distributed import Dist
from expkit.training.evaluate import reduce_sums
from expkit.training.gradients import GradientWatch
from expkit.training.timing import Timings


class PassPosition:
    """The Trainer's bookkeeping of passes and periods (a mixin: the Trainer holds the state)."""

    passes: int  # passes over the training split completed
    # where the current pass stands when a step-based period ended inside it: the generator's
    # state at the pass's start and the batches done (None: at a pass boundary)
    position: dict[str, Any] | None
    partial: dict[str, Any] | None  # where an interrupted period stands
    generator: torch.Generator
    augment: Any
    train_split: AnySplit
    batch_size: int
    device: torch.device
    dist: Dist
    grads: GradientWatch | None
    times: Timings
    loss_total: torch.Tensor
    epoch_sums: dict[str, torch.Tensor]
    epoch_seen: int
    #: examples of the period under way trained before this process took it over (a resume
    #: inside a period): the throughput counts only this segment's examples and seconds
    period_seen_before: int

    def _epochs_done(self) -> float:
        """Passes over the training split so far, with the fraction of the current one."""
        done = self.position["batches"] / self.train_split.num_batches(self.batch_size) \
            if self.position else 0.0
        return round(self.passes + done, 4)

    def _period_start(self) -> tuple[dict[str, torch.Tensor], int, int]:
        """(sums, examples seen, optimizer steps) a period starts from: zero, or where an
        interrupted one stood (`self.partial`, from a checkpoint), its pass position restored."""
        resume, self.partial = self.partial, None
        sums: dict[str, torch.Tensor] = resume["sums"] if resume else {}
        seen: int = resume["seen"] if resume else 0
        period_steps: int = resume.get("steps", 0) if resume else 0
        if resume:  # at a pass boundary (generator None), or inside a pass
            self.position = ({"generator": resume["generator"], "batches": resume["batches"]}
                             if resume["generator"] is not None else None)
        self.loss_total = torch.zeros((), dtype=torch.float64, device=self.device)
        if self.grads is not None:
            self.grads.reset(resume.get("grads") if resume else None)
        self.times.start_period()
        self.epoch_sums, self.epoch_seen, self.period_seen_before = sums, seen, seen
        return sums, seen, period_steps

    def _pass_start(self) -> tuple[torch.Tensor, int, int]:
        """(the generator's state at the pass's start, batches to skip, the pass's augmentation
        seed): a pass resumed inside replays its draws and skips what it trained."""
        if self.position is not None:
            self.generator.set_state(self.position["generator"])
        pass_rng = self.generator.get_state()
        skip = self.position["batches"] if self.position else 0
        self.position = None
        pass_seed = (int(torch.randint(1 << 62, (), generator=self.generator))
                     if self.augment is not None else 0)  # replayed with the pass's draws
        return pass_rng, skip, pass_seed

    def _pause_at(self, here: dict[str, Any] | None) -> None:
        """A step-based period ends: the next goes on from `here` (None: a pass boundary)."""
        if here is None:
            self.passes += 1
        self.position = here

    def _keep_partial(self, here: dict[str, Any] | None, sums: dict[str, torch.Tensor], seen: int,
                      period_steps: int, lr: float, started: float) -> None:
        """A stop signal ended the period early: what a resume needs to finish it exactly."""
        if here is None:
            self.passes += 1
        sums, seen = reduce_sums(self.dist, sums, seen, self.device)
        self.partial = {**(here or {"generator": None, "batches": 0}), "sums": sums, "seen": seen,
                        "steps": period_steps, "lr": lr, "seconds": time.perf_counter() - started,
                        "grads": self.grads.state() if self.grads is not None else None}
