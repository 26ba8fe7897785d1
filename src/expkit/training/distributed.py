"""Data-parallel training under torchrun: the process group, this rank's place in it, collectives.

`torchrun --nproc_per_node=N run.py ...` starts N copies of the same command with RANK,
WORLD_SIZE and LOCAL_RANK in their environment. Each copy joins one process group (gloo on
CPU, nccl on CUDA), trains on its shard of every global batch, and lets DistributedDataParallel
average the gradients. Rank 0 alone writes the run directory. Without torchrun (or with one
process) nothing here does anything and no process group is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from expkit.models.base import BaseModel


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun); safe before any import of torch."""
    return int(os.environ.get("RANK", "0"))


_CPU = torch.device("cpu")


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank, number of processes, and the backend joining them."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = _CPU  # where collectives' tensors live (nccl: this rank's GPU)

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process (collectives and sharding are on)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    def shard(self) -> tuple[int, int]:
        """(rank, world size): which slice of each batch this process trains on."""
        return self.rank, self.world_size

    def record(self) -> dict[str, Any]:
        """What run.json keeps about the process group."""
        return {"world_size": self.world_size, "backend": self.backend}

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op in one process)."""
        if self.enabled:
            dist.barrier()

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks, in place; every rank gets the total."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any_flag(self, value: int) -> int:
        """The largest of every rank's `value` (e.g. "did any rank get a stop signal")."""
        if not self.enabled:
            return value
        flag = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def agreed_stop(self, requested: str | None) -> str | None:
        """The stop request every rank acts on: this process's own (one process), or any
        rank's, agreed by an all-reduce. Ranks decide on the reduced value only: a signal that
        lands after the all-reduce waits for the next check, so no rank leaves a collective the
        others are still in."""
        if not self.enabled:
            return requested
        return _SIGNALS[self.any_flag(_SIGNALS.index(requested or ""))] or None

    def wrapped(self, model: BaseModel, device: torch.device) -> nn.parallel.DistributedDataParallel | None:
        """Under torchrun, `model.step` as DistributedDataParallel's forward (DDP averages the
        gradients over ranks); the model itself stays plain, so checkpoints load without DDP.
        None in one process."""
        if not self.enabled:
            return None
        return nn.parallel.DistributedDataParallel(
            _Steps(model), device_ids=[self.local_rank] if device.type == "cuda" else None)

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (any picklable object, e.g. the run directory)."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = Dist()
_SIGNALS = ["", "SIGINT", "SIGTERM"]  # a stop request as a number every rank can all-reduce


class _Steps(nn.Module):
    """`model.step` as a forward pass, so DistributedDataParallel sees (and syncs) every step."""

    def __init__(self, model: BaseModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.model.step(batch)


def setup(use_cuda: bool) -> Dist:
    """Join torchrun's process group when WORLD_SIZE > 1 (nccl on CUDA, else gloo); else SINGLE."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def teardown() -> None:
    """Leave the process group (at the end of a run, so the process exits cleanly)."""
    if dist.is_initialized():
        dist.destroy_process_group()
