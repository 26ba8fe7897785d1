"""The training loop, top to bottom. Everything optional is a callback.

Where each hook fires::

    on_fit_start(trainer)
    for epoch in epochs:
        on_epoch_start(trainer)
        model.train()
        for batch in train split (one randperm, whole-batch slices):
            loss, sums = model.step(batch)        # forward; sums stay on the device
            loss.backward(); clip; optimizer.step(); zero_grad
            per-step scheduler (onecycle)
        metrics = train_* means (one device sync per epoch) | val_* from evaluate()
        per-epoch scheduler step;  history.append(metrics)
        on_epoch_end(trainer, metrics)            # console, files, trackers, ...
        if trainer.should_stop: break
    on_fit_end(trainer)
"""

from __future__ import annotations

import time
from typing import Literal

import torch

from expkit.data.base import DataSplits, Split
from expkit.errors import ExpkitError
from expkit.models.base import BaseModel
from expkit.training.callbacks import Callback
from expkit.training.optim import Schedule

_BETTER = {"min": lambda a, b: a < b, "max": lambda a, b: a > b}


class Trainer:
    """Trains a model on in-memory splits; holds the state callbacks read (epoch, history, best)."""

    def __init__(self, model: BaseModel, optimizer: torch.optim.Optimizer,
                 schedule: Schedule | None, data: DataSplits, *, epochs: int, batch_size: int,
                 eval_batch_size: int, device: torch.device, seed: int,
                 monitor: str, monitor_mode: Literal["min", "max"],
                 callbacks: list[Callback]) -> None:
        self.model = model.to(device)
        self.optimizer = optimizer
        self.schedule = schedule
        self.train_split = data.train.to(device)
        self.val_split = data.val.to(device) if data.val is not None else None
        self.epochs = epochs
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.callbacks = callbacks
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.should_stop = False
        self.stop_reason = "completed all epochs"

    def is_better(self, value: float, than: float | None) -> bool:
        """Whether `value` of the monitored metric beats `than` (None: anything does)."""
        return than is None or _BETTER[self.monitor_mode](value, than)

    def fit(self) -> list[dict[str, float]]:
        """Run the epochs that remain; returns the history, one dict of metrics per epoch."""
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.epoch < self.epochs and not self.should_stop:
            for cb in self.callbacks:
                cb.on_epoch_start(self)
            started = time.perf_counter()
            metrics: dict[str, float] = {"epoch": self.epoch + 1}
            lr = self.optimizer.param_groups[0]["lr"]
            metrics |= self._train_epoch()
            if self.val_split is not None:
                metrics |= self.evaluate(self.val_split, "val")
            metrics["lr"] = lr
            metrics["epoch_time"] = time.perf_counter() - started
            self._step_epoch_scheduler(metrics)
            self.epoch += 1
            if self.monitor in metrics and self.is_better(metrics[self.monitor], self.best_value):
                self.best_epoch, self.best_value = self.epoch, metrics[self.monitor]
            self.history.append(metrics)
            for cb in self.callbacks:
                cb.on_epoch_end(self, metrics)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self.history

    def _train_epoch(self) -> dict[str, float]:
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        per_step = self.schedule is not None and self.schedule.interval == "step"
        for batch in self.train_split.batches(self.batch_size, self.generator):
            loss, batch_sums = self.model.step(batch)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if per_step:
                self.schedule.scheduler.step()  # type: ignore[union-attr]
            if sums:
                for name, value in batch_sums.items():
                    sums[name] += value
            else:
                sums = {name: value.detach().double() for name, value in batch_sums.items()}
                self._check_monitor(list(sums))
            seen += len(batch[1])
            self.global_step += 1
        return self._means(sums, seen, "train")

    @torch.inference_mode()
    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        """Mean metrics of the model over `split`, named `<prefix>_<metric>`."""
        self.model.eval()
        split = split.to(self.device)
        sums: dict[str, torch.Tensor] = {}
        for batch in split.batches(self.eval_batch_size):
            _, batch_sums = self.model.step(batch)
            for name, value in batch_sums.items():
                sums[name] = sums[name] + value if name in sums else value.double()
        return self._means(sums, len(split), prefix)

    @staticmethod
    def _means(sums: dict[str, torch.Tensor], count: int, prefix: str) -> dict[str, float]:
        if not sums:
            return {}
        values = (torch.stack(list(sums.values())) / max(count, 1)).tolist()  # one sync
        return {f"{prefix}_{name}": float(v) for name, v in zip(sums, values, strict=True)}

    def _check_monitor(self, names: list[str]) -> None:
        splits = ["train"] + (["val"] if self.val_split is not None else [])
        known = [f"{split}_{name}" for split in splits for name in names]
        if self.monitor not in known:
            raise ExpkitError(f"--monitor: got {self.monitor!r}, which this experiment does not "
                              f"log; choose one of: {', '.join(known)}")

    def _step_epoch_scheduler(self, metrics: dict[str, float]) -> None:
        if self.schedule is None or self.schedule.interval != "epoch":
            return
        scheduler = self.schedule.scheduler
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(metrics[self.monitor])
        else:
            scheduler.step()
