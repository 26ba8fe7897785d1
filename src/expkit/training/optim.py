"""Optimizer and learning-rate scheduler: their args, and building them from the args."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from pydantic import Field, model_validator

from expkit.config.args import Args
from expkit.errors import ExpkitError


class OptimizerArgs(Args):
    """Optimizer and its hyperparameters."""

    name: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="optimizer", json_schema_extra={"flag": "optimizer"})
    lr: float = Field(1e-3, gt=0, description="learning rate (peak rate with warmup/onecycle)")
    weight_decay: float = Field(0.0, ge=0, description="weight decay (decoupled for adamw)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (sgd only)")
    fused: bool = Field(True, description="adam/adamw: torch's fused kernel, one per step for all "
                        "parameters (~20% faster epochs on a small MLP); false = the "
                        "per-parameter loop")


class SchedulerArgs(Args):
    """Learning-rate schedule, stepped per epoch (onecycle: per batch)."""

    name: Literal["none", "step", "cosine", "plateau", "onecycle"] = Field(
        "none", description="learning-rate schedule", json_schema_extra={"flag": "scheduler"})
    warmup_epochs: int = Field(0, ge=0, le=1_000_000,
                               description="epochs of linear warmup before the schedule")
    step_size: int = Field(10, ge=1, le=1_000_000, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step/plateau: decay factor")
    plateau_patience: int = Field(2, ge=0, le=1_000_000, description="plateau: epochs without improvement")
    min_lr_factor: float = Field(0.0, ge=0, le=1, description="cosine: final lr as a fraction")

    @model_validator(mode="after")
    def _warmup_supported(self) -> SchedulerArgs:
        if self.warmup_epochs and self.name == "plateau":
            raise ValueError("--warmup_epochs cannot be combined with --scheduler=plateau")
        return self


_OPTIMIZERS: dict[str, Any] = {  # name -> the optimizer class
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def build_optimizer(args: OptimizerArgs, parameters: Iterable[Any],
                    **extra: Any) -> torch.optim.Optimizer:
    """The optimizer named by `args` over `parameters` (tensors, or param-group dicts).

    `--lr`, `--weight_decay`, `--momentum` (sgd) and `--fused` (adam/adamw) always apply. A
    field that a subclass of OptimizerArgs adds is passed on when the optimizer takes a keyword
    of that name (`nesterov: bool` reaches SGD, `amsgrad: bool` Adam); `extra` keywords
    (`betas=(0.9, 0.95)`, from `BaseExperiment.optimizer_kwargs`) go on top."""
    params = list(parameters)
    cls = _OPTIMIZERS.get(args.name)
    if cls is None:
        raise ExpkitError(f"--optimizer={args.name}: not one expkit builds ({', '.join(_OPTIMIZERS)}); "
                          "build it in your experiment's build_optimizer(model)")
    accepted = inspect.signature(cls).parameters
    own = {k: v for k, v in args.model_dump().items()
           if k not in OptimizerArgs.model_fields and k in accepted}
    kwargs: dict[str, Any] = {"lr": args.lr, "weight_decay": args.weight_decay, **own, **extra}
    if args.name == "sgd":
        kwargs.setdefault("momentum", args.momentum)
    elif args.fused:
        try:  # params of a type or on a device the fused kernel lacks: the per-parameter loop
            return cast(torch.optim.Optimizer, cls(params, **kwargs, fused=True))
        except (RuntimeError, ValueError):
            pass
    return cast(torch.optim.Optimizer, cls(params, **kwargs))


@dataclass
class Schedule:
    """A scheduler and when the loop steps it."""

    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
    interval: Literal["epoch", "step"]


def build_scheduler(args: SchedulerArgs, optimizer: torch.optim.Optimizer, epochs: int,
                    steps_per_epoch: int, monitor_mode: Literal["min", "max"],
                    total_steps: int | None = None) -> Schedule | None:
    """The schedule named by `args`, or None for a constant learning rate without warmup.
    `total_steps`: the optimizer steps of the whole run when not `epochs * steps_per_epoch`."""
    warm = args.warmup_epochs
    if args.name == "plateau":
        return Schedule(torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=monitor_mode, factor=args.gamma, patience=args.plateau_patience),
            "epoch")
    if args.name == "onecycle":
        pct = warm / epochs if warm else 0.3
        return Schedule(torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps or epochs * steps_per_epoch,
            pct_start=min(max(pct, 1e-3), 0.999)), "step")
    if args.name == "none" and not warm:
        return None

    def factor(epoch: int) -> float:
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        e = epoch - warm
        if args.name == "step":
            return float(args.gamma ** (e // args.step_size))
        if args.name == "cosine":
            span = max(epochs - warm, 1)
            cos = 0.5 * (1 + math.cos(math.pi * min(e, span) / span))
            return args.min_lr_factor + (1 - args.min_lr_factor) * cos
        return 1.0

    return Schedule(torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "epoch")


def optimizer_step(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                   scaler: torch.amp.GradScaler | None, grad_clip_norm: float | None,
                   schedule: Schedule | None, watch: Callable[[], None] | None = None) -> None:
    """One optimizer step of the loop: unscale (fp16), show the gradients to `watch` (before
    clipping), clip the gradient norm, step, zero the gradients, and step a per-step schedule."""
    if scaler is not None:
        if grad_clip_norm or watch is not None:
            scaler.unscale_(optimizer)
        if watch is not None:
            watch()
        if grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        if watch is not None:
            watch()
        if grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if schedule is not None and schedule.interval == "step":
        schedule.scheduler.step()  # type: ignore[call-arg]


def step_epoch_schedule(schedule: Schedule | None, monitored: float | None) -> None:
    """Step a per-epoch (step-based runs: per-evaluation) schedule; plateau reads `monitored`."""
    if schedule is None or schedule.interval != "epoch":
        return
    if isinstance(schedule.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        schedule.scheduler.step(monitored)  # type: ignore[arg-type]
    else:
        schedule.scheduler.step()
