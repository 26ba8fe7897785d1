"""The training loop, top to bottom. Everything optional is a callback.

Where each hook fires::

    on_fit_start(trainer)
    for each evaluation period that remains (an epoch; or --eval_every optimizer steps):
        on_epoch_start(trainer)
        model.train()
        for batch in train split (one randperm per pass, whole-batch slices; a step-based
                                  period picks up the pass where the last one left it):
            batch = augment(batch, generator seeded by the pass, the batch and the rank)
            with autocast(precision): loss, sums = model.step(batch)   # sums stay on the device
            (loss / accumulate).backward()
            every `accumulate` batches: clip, optimizer.step(), zero_grad, per-step scheduler
                on_train_batch_end(trainer, i)       # only callbacks that override it
                on a stop signal: on_interrupt(trainer); return   # resumable mid-period
        metrics = train_* means (one device sync per period) | val_* from evaluate()
        per-epoch scheduler step;  best epoch;  history.append(metrics)
        on_epoch_end(trainer, metrics)   # checkpoints, early stopping, files; a NaN loss stops
        if trainer.should_stop: break
    on_fit_end(trainer)
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Literal

import torch

from expkit.data.augment import augmented
from expkit.data.base import AnySplit, Batch, DataSplits, Split, examples_in
from expkit.models.base import BaseModel
from expkit.training.averaging import weight_average
from expkit.training.callbacks import Callback
from expkit.training.distributed import SINGLE, Dist
from expkit.training.evaluate import Evaluator, check_monitor, metric_values, reduce_sums
from expkit.training.gradients import GradientWatch, divergence
from expkit.training.metrics import Declared
from expkit.training.optim import Schedule, optimizer_step, step_epoch_schedule
from expkit.training.position import PassPosition
from expkit.training.state import restore_trainer, trainer_state
from expkit.training.timing import StepProfiler, Timings, part_of

_BETTER = {"min": lambda a, b: a < b, "max": lambda a, b: a > b}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Trainer(PassPosition):
    """Trains a model on in-memory splits; holds the state callbacks read (epoch, history, best).

    Epoch-based (`epochs`): an evaluation ends each pass over the training split. Step-based
    (`max_steps`): an evaluation every `eval_every` optimizer steps, wherever in a pass they
    fall; `epoch` then counts evaluations, `steps` the optimizer steps.
    """

    def __init__(self, model: BaseModel, optimizer: torch.optim.Optimizer,
                 schedule: Schedule | None, data: DataSplits, *, epochs: int, batch_size: int,
                 eval_batch_size: int, device: torch.device, seed: int,
                 monitor: str, monitor_mode: Literal["min", "max"], callbacks: list[Callback],
                 precision: Literal["32", "bf16", "fp16"] = "32", accumulate_grad_batches: int = 1,
                 grad_clip_norm: float | None = None, grad_norm: bool = True,
                 grad_norm_by_module: bool = False, ema_decay: float | None = None,
                 swa_start: int | None = None, timings: Timings | None = None,
                 profiler: StepProfiler | None = None, compile: bool = False,
                 channels_last: bool = False, dist: Dist = SINGLE,
                 metrics: Declared | None = None, artifacts: Any = None,
                 max_steps: int | None = None, eval_every: int | None = None) -> None:
        self.memory_format = torch.channels_last if channels_last else None
        self.model = self._placed(model, device, compile)
        self.dist = dist
        self.ddp = dist.wrapped(self.model, device)  # under torchrun, steps go through DDP
        self.optimizer = optimizer
        self.schedule = schedule
        # moved to the device once (and to channels-last once): no per-batch host-to-device copy
        self.train_split = data.train.to(device, self.memory_format)
        self.val_split = data.val.to(device, self.memory_format) if data.val is not None else None
        self.augment = getattr(data, "augment", None)  # training batches only
        self.released = False  # release_data() was called: no more training
        self.batch_size = batch_size
        self.accumulate = accumulate_grad_batches
        self.max_steps = max_steps
        self.eval_every = eval_every or (self.steps_per_pass() if max_steps else None)
        # evaluations in all: epochs, or the step-based periods
        self.epochs = epochs if max_steps is None else -(-max_steps // self.eval_every)  # type: ignore[operator]
        self.eval_batch_size = eval_batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.metrics: Declared = {} if metrics is None else metrics  # none declared: every sum's mean
        # --ema_decay / --swa_start: evaluation, the best epoch and the test see the average
        self.average = weight_average(self.model, ema_decay, swa_start)
        self.evaluated_model = self.average.model if self.average is not None else self.model
        self.evaluator = Evaluator(self.evaluated_model, self.metrics, batch_size=eval_batch_size,
                                   device=device, dist=dist, autocast=self._autocast,
                                   memory_format=self.memory_format)
        self.callbacks = callbacks
        self.precision = precision
        self.grad_clip_norm = grad_clip_norm
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        # fp16's scaler skips the steps whose gradient overflowed: those are no divergence
        self.grads = GradientWatch(self.model, device, grad_norm_by_module,
                                   first_nonfinite=self.scaler is None) if grad_norm else None
        self.times = timings or Timings(device)
        self.profiler = profiler
        # what the throughput counts: a token stream's tokens, else examples
        self.unit, self.per_example = (("tokens", int(data.train.block_size))
                                       if hasattr(data.train, "block_size") else ("samples", 1))
        self.artifacts = artifacts  # the run's Artifacts: `trainer.artifacts.save(name, value)`
        self._start_counting()

    def _placed(self, model: BaseModel, device: torch.device, compile: bool) -> BaseModel:
        """The model on its device (channels-last when asked), compiled in place when asked
        (state_dict keys and checkpoints stay the same)."""
        model = model.to(device)
        if self.memory_format is not None:
            model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        if compile:
            model.compile()
        return model

    def _start_counting(self) -> None:
        """Where training stands before it starts: no evaluation, step or pass done, no best."""
        self.epoch = 0  # evaluations done: epochs completed (step-based: periods completed)
        self.global_step = 0  # batches trained
        self.steps = 0  # optimizer steps taken
        self.passes = 0  # passes over the training split completed
        # where the current pass stands when a step-based period ended inside it: the
        # generator's state at the pass's start and the batches done (None: at a pass boundary)
        self.position: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.should_stop = False
        self.diverged = False  # the training loss became NaN or infinite
        self.stop_reason = "completed all epochs"
        self.stop_requested: str | None = None  # set by a signal handler: stop after this step
        self.interrupted = False
        self.partial: dict[str, Any] | None = None  # where an interrupted period stands
        self.epoch_sums: dict[str, torch.Tensor] = {}  # this epoch's metric sums so far
        self.loss_total = torch.zeros((), dtype=torch.float64)  # this epoch's backpropagated losses
        self.epoch_seen = self.period_seen_before = 0

    def is_better(self, value: float, than: float | None) -> bool:
        """Whether `value` of the monitored metric beats `than` (None: anything does)."""
        return than is None or _BETTER[self.monitor_mode](value, than)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])

    @property
    def step_based(self) -> bool:
        """Whether the run counts optimizer steps (`--max_steps`) rather than epochs."""
        return self.max_steps is not None

    def steps_per_pass(self) -> int:
        """Optimizer steps in one pass over the training split."""
        return -(-self.train_split.num_batches(self.batch_size) // self.accumulate)

    def done(self) -> bool:
        """Whether the planned training is complete (all epochs, or `max_steps` steps)."""
        return self.steps >= self.max_steps if self.max_steps is not None else self.epoch >= self.epochs

    def fit(self) -> list[dict[str, float]]:
        """Run the evaluation periods that remain; returns the history, one row per evaluation."""
        if self.released:
            raise RuntimeError("fit() after release_data(): the training data is gone")
        self.interrupted = False
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while not self.done() and not self.should_stop:
            if self._agreed_stop():
                return self._interrupt()
            for cb in self.callbacks:
                cb.on_epoch_start(self)
            started = time.perf_counter() - (self.partial or {}).get("seconds", 0.0)
            lr = (self.partial or {}).get("lr", self.optimizer.param_groups[0]["lr"])
            train = self._train_period(lr, started)
            if train is None:
                return self._interrupt()
            metrics = self._row(train, lr, started)
            step_epoch_schedule(self.schedule, metrics.get(self.monitor))
            self.epoch += 1
            if self.monitor in metrics and self.is_better(metrics[self.monitor], self.best_value):
                self.best_epoch, self.best_value = self.epoch, metrics[self.monitor]
            self.history.append(metrics)
            loss = self._backprop_loss()
            if not math.isfinite(loss):
                self.should_stop = self.diverged = True
                self.stop_reason = divergence(loss, self.at(), self.grads)
            self._epoch_end(metrics)
        if self.done() and not self.should_stop and self.step_based:
            self.stop_reason = f"completed all {self.max_steps} steps"
        if self.profiler is not None:
            self.profiler.close()
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self.history

    def _row(self, train: dict[str, float], lr: float, started: float) -> dict[str, float]:
        """A period's history row: where it ended, its train metrics, the validation metrics
        (of the averaged weights, when on), the gradient's norm, throughput and times, lr."""
        metrics: dict[str, float] = ({"epoch": self.epoch + 1} if not self.step_based else
                                     {"step": self.steps, "epoch": self._epochs_done()})
        metrics |= train
        clock = self.times.clock()
        if self.average is not None:
            self.average.ready(self.train_split, self.batch_size)
        if self.val_split is not None:
            metrics |= self.evaluate(self.val_split, "val")
        self.times.add("evaluation", self.times.clock() - clock)
        metrics |= self.grads.period() if self.grads is not None else {}
        trained = self.epoch_seen - self.period_seen_before  # by this process, in this period
        metrics |= self.times.row(trained * self.dist.world_size * self.per_example,
                                  self.unit)
        metrics["lr"] = lr
        metrics["epoch_time"] = time.perf_counter() - started
        return metrics

    def _epoch_end(self, metrics: dict[str, float]) -> None:
        """The callbacks' end of a period, each timed (checkpoints, trackers, the others: in
        the run's split, not in the row, which the checkpoint holds before they are done)."""
        for cb in self.callbacks:
            clock = self.times.clock()
            cb.on_epoch_end(self, metrics)
            self.times.add(part_of(cb), self.times.clock() - clock)

    def at(self, evaluation: int | None = None) -> str:
        """Evaluation N (1-based; default: the latest) as people name it: "epoch 3" or "step 40"."""
        n = self.epoch if evaluation is None else evaluation
        return f"step {self.history[n - 1]['step'] if n else 0}" if self.step_based else f"epoch {n}"

    def next_evaluation(self) -> int:
        """The epoch (step-based: the step) that the period now training ends with."""
        return (self.epoch + 1 if self.max_steps is None
                else min(self.steps + self.eval_every, self.max_steps))  # type: ignore[operator]

    def stopped_at(self) -> str:
        """Where an interrupted run stopped: "at step 23", "in epoch 2" or "after epoch 1"."""
        return (f"at step {self.steps}" if self.step_based else f"in epoch {self.epoch + 1}"
                if self.partial else f"after epoch {self.epoch}")

    def release_data(self) -> None:
        """Let go of the train and val splits once training is over (testing and the final
        plot do not add to the peak memory; streaming workers exit)."""
        empty = Split(torch.empty(0), torch.empty(0, dtype=torch.long))
        self.train_split = empty
        self.val_split = None if self.val_split is None else empty
        self.released = True

    def _interrupt(self) -> list[dict[str, float]]:
        self.interrupted = True
        if self.profiler is not None:
            self.profiler.close()
        for cb in self.callbacks:
            cb.on_interrupt(self)
        return self.history

    def _train_period(self, lr: float, started: float) -> dict[str, float] | None:
        """Train up to the next evaluation: one pass over the training split (epoch-based), or
        `eval_every` optimizer steps across passes (step-based). Returns the train metrics over
        the period's batches; None if a stop signal ended it early (`self.partial` says where)."""
        self.model.train()
        sums, seen, period_steps = self._period_start()
        budget = (None if self.max_steps is None  # optimizer steps this period takes
                  else min(self.eval_every, self.max_steps - self.steps + period_steps))  # type: ignore[type-var]
        batch_hooks = [cb for cb in self.callbacks
                       if type(cb).on_train_batch_end is not Callback.on_train_batch_end]
        last = self.train_split.num_batches(self.batch_size) - 1
        clock, add = self.times.clock, self.times.add
        watch = None if self.grads is None else (lambda: self.grads.observe(self.steps + 1))  # type: ignore[union-attr]
        while True:  # passes (epoch-based: exactly one)
            pass_rng, skip, pass_seed = self._pass_start()
            batches = self.train_split.batches(self.batch_size, self.generator, skip,
                                               self.dist.shard())
            before = clock()
            for i, batch in enumerate(batches, start=skip):
                steps = (i + 1) % self.accumulate == 0 or i == last
                batch = augmented(self.augment, batch, pass_seed, i, self.dist.rank, self.device)
                fetched = clock()
                add("data", fetched - before)
                sums = self._added(sums, self._forward_backward(batch, i, steps))
                seen += examples_in(batch)
                self.epoch_seen = seen
                self.global_step += 1
                before = clock()
                add("compute", before - fetched)
                if not steps:
                    continue
                optimizer_step(self.optimizer, self.model, self.scaler, self.grad_clip_norm,
                               self.schedule, watch)
                if self.average is not None:
                    self.average.update(self.steps + 1 if self.step_based else self.epoch + 1)
                stepped = clock()
                add("optimizer", stepped - before)
                if self.profiler is not None:
                    self.profiler.step()
                self.steps += 1
                period_steps += 1
                for cb in batch_hooks:
                    cb.on_train_batch_end(self, i)
                before = clock()
                add("callbacks", before - stepped)
                here = {"generator": pass_rng, "batches": i + 1} if i != last else None
                if budget is not None and period_steps >= budget:
                    self._pause_at(here)
                    return self._train_means(sums, seen)
                if self._agreed_stop() and (here is not None or budget is not None):
                    self._keep_partial(here, sums, seen, period_steps, lr, started)
                    return None
            self.passes += 1
            if budget is None:
                return self._train_means(sums, seen)

    def _forward_backward(self, batch: Batch, i: int, steps: bool) -> dict[str, Any]:
        """One batch's loss backpropagated (scaled for ranks and accumulation); its sums."""
        n, world = len(self.train_split), self.dist.world_size
        with self._sync(steps), self._autocast():
            loss, batch_sums = self.ddp(batch) if self.ddp else self.model.step(batch)
            if world > 1:  # DDP averages over ranks; weigh by this rank's share of the batch
                loss = loss * (examples_in(batch) * world / min(self.batch_size, n - i * self.batch_size))
            if self.accumulate > 1:
                loss = loss / self.accumulate
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        self.loss_total += loss.detach()
        return batch_sums

    def _added(self, sums: dict[str, torch.Tensor], batch_sums: dict[str, Any]
               ) -> dict[str, torch.Tensor]:
        """The period's sums with one batch's added (the first batch's start them, on the
        device); a stateful metric's inputs are for evaluations only."""
        if sums:
            for name in sums:
                sums[name] += batch_sums[name]
            return sums
        sums = {name: value.detach().double() for name, value in batch_sums.items()
                if isinstance(value, torch.Tensor)}
        check_monitor(self.monitor, self.metrics, list(sums), list(batch_sums),
                      self.val_split is not None)
        self.epoch_sums = sums  # updated in place from here on
        return sums

    def _train_means(self, sums: dict[str, torch.Tensor], seen: int) -> dict[str, float]:
        """The train metrics of a period from its sums (summed over ranks)."""
        return metric_values(self.metrics, *reduce_sums(self.dist, sums, seen, self.device), "train")

    def _backprop_loss(self) -> float:
        """This epoch's sum of the losses it backpropagated, over all ranks (one sync an epoch):
        divergence is watched on what the optimizer follows, whatever metrics `step` returns."""
        return float(self.dist.all_sum(self.loss_total.clone()).item())

    def _agreed_stop(self) -> str | None:
        """The stop request every rank acts on (Dist.agreed_stop), kept as this one's too."""
        agreed = self.dist.agreed_stop(self.stop_requested)
        if agreed:
            self.stop_requested = agreed
        return agreed

    def _sync(self, steps: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP's gradient all-reduce only on batches that end in an optimizer step."""
        return self.ddp.no_sync() if self.ddp is not None and not steps else contextlib.nullcontext()

    def running_mean(self, name: str = "loss") -> float | None:
        """Mean of a training metric over this epoch's batches so far; syncs the device, call rarely."""
        total = self.epoch_sums.get(name)
        return float(total) / self.epoch_seen if total is not None and self.epoch_seen else None

    def evaluate(self, split: AnySplit, prefix: str) -> dict[str, float]:
        """The declared metrics of the model over `split`, named `<prefix>_<metric>`."""
        return self.evaluator(split, prefix)

    def weights(self) -> dict[str, Any]:
        """The weights a checkpoint keeps: "model", those evaluation sees; with an average on,
        "trained" (the optimizer's) and "average" (its kind and count) too."""
        if self.average is None:
            return {"model": self.model.state_dict()}
        return {"model": self.average.model.state_dict(), "trained": self.model.state_dict(),
                "average": self.average.state()}

    def keep_evaluated_weights(self) -> str | None:
        """After training: the weights evaluation saw (the average, when on) into `model`,
        which the test and whatever uses the model next see; returns the average's kind."""
        if self.average is None:
            return None
        kind, self.average = self.average.kind, None
        self.model.load_state_dict(self.evaluated_model.state_dict())
        self.evaluated_model = self.evaluator.model = self.model
        return kind

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs: weights, optimizer, schedule, counters, RNGs, callbacks."""
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s output (RNG states included)."""
        restore_trainer(self, state)
