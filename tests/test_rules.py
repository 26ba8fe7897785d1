"""The rules behind numbers a user reads and decisions the loop takes, each recomputed from its
definition or by a peer implementation (torch.optim.swa_utils), in-process and in seconds, on
inputs where a plausible bug changes the answer: an improvement inside the patience window,
batch norm under EMA and SWA, several parameters non-finite at one step, a data path slowed on
purpose, an exported program off by more than the tolerance. `make mutants` runs these (and
each module's other fast tests) against every sampled mutant of the module."""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from conftest import Workspace, register
from expkit.data.base import Split
from expkit.engine.export import ATOL, RTOL, compare_outputs
from expkit.models.base import BaseModel
from expkit.training import gradients
from expkit.training.averaging import WeightAverage, weight_average
from expkit.training.early_stopping import EarlyStopping, decide
from expkit.training.gradients import GradientWatch, divergence

# ---- early stopping -------------------------------------------------------------------------


def reference_stop(values: list[float], patience: int, min_delta: float, mode: str
                   ) -> tuple[int | None, float]:
    """The index of the value after which training stops (None: never), and the best value:
    a value improves when it beats the best by more than min_delta; `patience` values in a
    row that do not improve stop it."""
    best: float | None = None
    wait = 0
    for i, value in enumerate(values):
        improved = best is None or (value < best - min_delta if mode == "min"
                                    else value > best + min_delta)
        if improved:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return i, best  # type: ignore[return-value]
    return None, best  # type: ignore[return-value]


CURVES = [  # (values, patience, min_delta, mode, index it stops after)
    ([5.0, 4.0, 4.5, 4.6, 3.9, 4.0, 4.1, 4.2, 3.0], 3, 0.0, "min", 7),  # improves inside the window
    ([5.0, 4.0, 4.0, 4.0, 4.0, 3.0], 3, 0.0, "min", 4),                # equal is no improvement
    ([0.5, 0.6, 0.61, 0.615, 0.7, 0.71, 0.715, 0.8], 2, 0.02, "max", 3),  # by more than min_delta
    ([0.5, 0.6, 0.61, 0.65, 0.66, 0.7, 0.75], 2, 0.02, "max", None),
    ([1.0, 2.0, 3.0], 1, 0.0, "min", 1),
    ([3.0, 2.0, 2.5, 1.0, 1.5, 0.5, 0.6, 0.7, 0.8], 3, 0.1, "min", 8),
]


@pytest.mark.parametrize(("values", "patience", "min_delta", "mode", "stops"), CURVES)
def test_early_stopping_decides_as_its_rule_says(values: list[float], patience: int,
                                                 min_delta: float, mode: str, stops: int | None
                                                 ) -> None:
    assert reference_stop(values, patience, min_delta, mode)[0] == stops
    best, wait, stopped_at = None, 0, None
    for i, value in enumerate(values):
        best, wait, stop = decide(value, best, wait, patience=patience, min_delta=min_delta,
                                  mode=mode)  # type: ignore[arg-type]
        if stop:
            stopped_at = i
            break
    assert stopped_at == stops
    assert best == reference_stop(values[:(stops or len(values) - 1) + 1], patience, min_delta,
                                  mode)[1]

    # the callback: the same epoch, the reason, and a resume between any two epochs
    for cut in range(len(values)):
        first = EarlyStopping("val_x", mode, patience, min_delta)  # type: ignore[arg-type]
        trainer = SimpleNamespace(should_stop=False, stop_reason=None)
        seen = 0
        for value in values[:cut]:
            first.on_epoch_end(trainer, {"val_x": value})  # type: ignore[arg-type]
            seen += 1
            if trainer.should_stop:
                break
        if not trainer.should_stop:
            second = EarlyStopping("val_x", mode, patience, min_delta)  # type: ignore[arg-type]
            second.load_state_dict(first.state_dict())
            for value in values[cut:]:
                second.on_epoch_end(trainer, {"val_x": value, "other": 0.0})  # type: ignore[arg-type]
                seen += 1
                if trainer.should_stop:
                    break
        assert (seen - 1 if trainer.should_stop else None) == stops, cut
    if stops is not None:
        assert trainer.stop_reason == (f"early stopping: val_x did not improve by more than "
                                       f"{min_delta} for {patience} epochs")


def test_early_stopping_holds_for_any_string_and_any_patience() -> None:
    """The mode as read back from a checkpoint or config.json (an equal string, not the same
    object), a patience past the small integers CPython shares, and a fresh stopper's state."""
    mode = "".join(["ma", "x"])  # equal to "max", another object
    assert decide(0.5, 0.49, 0, patience=1, min_delta=0.02, mode=mode)[1:] == (1, True)  # type: ignore[arg-type]
    assert decide(0.52, 0.49, 0, patience=1, min_delta=0.02, mode=mode)[:2] == (0.52, 0)  # type: ignore[arg-type]
    assert decide(1.0, 0.5, 299, patience=300, min_delta=0.0, mode="min") == (0.5, 300, True)
    assert decide(1.0, 0.5, 298, patience=300, min_delta=0.0, mode="min") == (0.5, 299, False)
    assert EarlyStopping("val_x", "min", 3, 0.0).state_dict() == {"best": None, "wait": 0}


def test_early_stopping_ignores_a_period_without_its_monitor() -> None:
    stopper = EarlyStopping("val_x", "min", 1, 0.0)
    trainer = SimpleNamespace(should_stop=False, stop_reason=None)
    stopper.on_epoch_end(trainer, {"val_x": 1.0})  # type: ignore[arg-type]
    for _ in range(3):
        stopper.on_epoch_end(trainer, {"train_x": 5.0})  # type: ignore[arg-type]
    assert not trainer.should_stop and stopper.state_dict() == {"best": 1.0, "wait": 0}
    trainer.should_stop, trainer.stop_reason = True, "another reason"
    stopper.on_epoch_end(trainer, {"val_x": 2.0})  # type: ignore[arg-type]
    assert trainer.stop_reason == "another reason", "a stop already asked for keeps its reason"


# ---- weight averaging against torch.optim.swa_utils ----------------------------------------


class Normed(BaseModel):
    """Linear -> batch norm -> linear: weights and floating-point buffers to average."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.last = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.last(torch.relu(self.norm(self.first(x))))
        return out

    def step(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        loss = ((self(x).squeeze(1) - y) ** 2).mean()
        return loss, {"loss": loss.detach() * len(y)}


def _data() -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, generator=g) * 2 + 1
    return Split(x, x.sum(1) + torch.randn(24, generator=g))


def _train(model: Normed, split: Split, epochs: int, after_step: Any) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for epoch in range(1, epochs + 1):
        for batch in split.batches(6):
            loss, _ = model.step(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            after_step(epoch)


def _assert_same(ours: nn.Module, theirs: nn.Module) -> None:
    """The floating-point weights and buffers agree (a step count is not averaged)."""
    mine, peer = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == peer.keys()
    for key, value in mine.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, peer[key], rtol=1e-6, atol=1e-7, msg=key)


def test_ema_equals_torchs_averaged_model_weights_and_batch_norm_buffers() -> None:
    torch.manual_seed(0)
    model = Normed()
    average = weight_average(model, ema_decay=0.8, swa_start=None)
    assert average is not None and average.kind == "ema"
    peer = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.8), use_buffers=True)
    peer.update_parameters(model)  # the average starts at the initial weights

    def both(epoch: int) -> None:
        average.update(epoch)
        peer.update_parameters(model)

    _train(model, _data(), 3, both)
    assert average.count == 12
    _assert_same(average.model, peer.module)
    assert not torch.equal(average.model.norm.running_mean, model.norm.running_mean), \
        "the buffers are averaged, not copied"
    assert average.model.norm.num_batches_tracked == model.norm.num_batches_tracked == 12
    assert average.state() == {"kind": "ema", "count": 12}
    assert not any(p.requires_grad for p in average.model.parameters()), "never trained"


def test_swa_equals_torchs_average_and_update_bn_from_its_start() -> None:
    torch.manual_seed(0)
    model = Normed()
    split = _data()
    average = weight_average(model, ema_decay=None, swa_start=2)
    assert average is not None and average.kind == "swa"
    peer = AveragedModel(model)
    average.ready(split, 6)  # before SWA starts, evaluation sees the trained weights
    _assert_same(average.model, model)

    def both(epoch: int) -> None:
        average.update(epoch)
        if epoch >= 2:
            peer.update_parameters(model)

    _train(model, split, 4, both)
    assert average.count == 12  # epochs 2 to 4, four steps each
    average.ready(split, 6)
    update_bn([x for x, _ in split.batches(6)], peer)
    _assert_same(average.model, peer.module)
    assert not average.model.training and average.model.norm.momentum == 0.1

    resumed = WeightAverage(Normed(), "swa", start=2)
    resumed.load(average.model.state_dict(), average.state())
    assert resumed.count == 12
    _assert_same(resumed.model, average.model)


# ---- the gradient watch ---------------------------------------------------------------------


class Three(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(3))
        self.c = nn.Parameter(torch.zeros(1))


#: per step, each parameter's gradient: steps 3 and 4 hold non-finite values in several
STEPS = [
    {"a": [3.0, 4.0], "b": [1.0, 2.0, 2.0], "c": [12.0]},
    {"a": [0.0, 1.0], "b": [0.0, 0.0, 0.0], "c": [-2.0]},
    {"a": [1.0, 1.0], "b": [math.nan, 1.0, 0.0], "c": [math.inf]},
    {"a": [math.nan, 0.0], "b": [1.0, 1.0, 1.0], "c": [1.0]},
    {"a": [2.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [2.0]},
]


@pytest.mark.parametrize("chunk", [1, 2, 256])
def test_the_gradient_watch_means_finite_steps_and_names_the_first_bad_parameter(
        monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(gradients, "CHUNK", chunk)
    model = Three()
    watch = GradientWatch(model, torch.device("cpu"), by_module=True)
    assert watch.first_nonfinite() is None and watch.period() == {}
    for step, grads in enumerate(STEPS, start=1):
        for name, values in grads.items():
            getattr(model, name).grad = torch.tensor(values)
        watch.observe(step)
    finite = [g for g in STEPS if all(math.isfinite(v) for vs in g.values() for v in vs)]
    total = [math.sqrt(sum(v * v for vs in g.values() for v in vs)) for g in finite]
    got = watch.period()
    assert got["grad_norm"] == pytest.approx(sum(total) / len(total), rel=1e-6)
    for name in "abc":
        norms = [math.sqrt(sum(v * v for v in g[name])) for g in finite]
        assert got[f"grad_norm/{name}"] == pytest.approx(sum(norms) / len(norms), rel=1e-6)
    assert watch.first_nonfinite() == (3, "b"), "the first step, and its first parameter by order"
    assert divergence(math.nan, "epoch 1", watch) == (
        "the training loss became nan in epoch 1; its gradient first became non-finite at "
        "optimizer step 3, in b; lower --lr or set --grad_clip_norm")

    watch.reset()  # a new period: the means start over, the first bad step stays
    model.a.grad, model.b.grad, model.c.grad = torch.ones(2), torch.ones(3), None
    watch.observe(6)
    assert watch.period()["grad_norm"] == pytest.approx(math.sqrt(5))
    assert watch.first_nonfinite() == (3, "b")
    again = GradientWatch(model, torch.device("cpu"), by_module=True)
    again.load(watch.state())
    assert again.first_nonfinite() == (3, "b") and again.period() == watch.period()


# ---- timings: a data path slowed on purpose ---------------------------------------------------

SLOW = '''
import time

import torch
from torch import nn

from expkit import BaseExperiment, BaseModel, DataInfo, DataSplits, ExperimentArgs, Split, StreamSplit

PAUSE = 0.05  # seconds each training item takes to read


class SlowItems(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        time.sleep(PAUSE)
        return torch.tensor([float(i)]), torch.tensor(float(i))


class Tiny(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def step(self, batch):
        x, y = batch
        loss = ((self.linear(x).squeeze(1) - y) ** 2).mean()
        return loss, {"loss": loss.detach() * len(y)}


class SlowExperiment(BaseExperiment[ExperimentArgs]):
    args_class = ExperimentArgs
    metrics = {"loss": "min"}
    default_monitor = "val_loss"

    def build_data(self):
        held = Split(torch.zeros(4, 1), torch.zeros(4))
        return DataSplits(None, (1,), train=StreamSplit(SlowItems(), num_workers=0), val=held,
                          test=held)

    def build_model(self, data: DataInfo):
        return Tiny()
'''


def test_a_slow_data_path_is_data_time_not_compute_and_the_run_is_input_bound(
        workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each training item sleeps 50 ms while being read: each epoch's data_time holds at least
    those 0.8 s (a lower bound that no machine's load lowers), the model's step a tiny part of
    that, and the run says it was input-bound."""
    registry = register(tmp_path, monkeypatch, "slow", SLOW, "SlowExperiment")
    started = time.perf_counter()
    done = workspace.run("--experiment_id=slow", "--epochs=2", "--batch_size=4", "--seed=0",
                         registry=registry)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - started >= 1.6
    from test_timing import rows

    run = workspace.last_run("slow")
    for row in rows(run):
        assert row["data_time"] >= 16 * 0.05
        assert row["compute_time"] < 16 * 0.05 / 2, "reading is not computing"
        assert row["samples_per_second"] * (row["data_time"] + row["compute_time"]
                                            + row["optimizer_time"]) == pytest.approx(16)
    summary = Workspace.metrics(run)["time"]
    assert summary["input_bound"] is True and summary["data"] >= 32 * 0.05
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("time: ")]
    assert "; input-bound: more time went to getting batches than to computing them" in line


# ---- an exported program's check --------------------------------------------------------------


def test_an_exported_programs_check_is_the_largest_difference_and_the_stated_tolerance() -> None:
    expected = torch.tensor([[1.0, -2.0], [100.0, 0.0]])
    near = expected + torch.tensor([[1e-5, -3e-5], [5e-3, 0.0]])  # 100 allows 1e-4 + 1e-2
    check = compare_outputs(near, expected)
    assert check.within and check.max_difference == pytest.approx(5e-3, rel=1e-3)
    assert check.examples == 2
    limit = ATOL + RTOL * 2.0  # the element -2.0's allowance
    over = expected.clone()
    over[0, 1] -= limit * 1.5
    check = compare_outputs(over, expected)
    assert not check.within and check.max_difference == pytest.approx(limit * 1.5, rel=1e-3)
    assert compare_outputs(expected, expected).max_difference == 0.0
    nan = expected.clone()
    nan[1, 1] = math.nan
    check = compare_outputs(nan, expected)
    assert not check.within and check.max_difference == math.inf


def test_swa_from_the_first_epoch_by_default() -> None:
    torch.manual_seed(0)
    model = Normed()
    average = WeightAverage(model, "swa")
    average.update(1)
    assert average.count == 1, "SWA starts at epoch 1 unless told otherwise"
    _assert_same(average.model, model)


# ---- the time split, by hand ------------------------------------------------------------------


def test_the_time_line_shows_each_part_of_half_a_percent_or_more_of_the_seconds() -> None:
    from expkit.training.timing import Timings

    times = Timings(torch.device("cpu"))
    assert times.line() is None, "nothing timed yet: no line (and no division by zero)"
    for part, seconds in (("data", 0.002), ("compute", 0.1), ("optimizer", 0.05),
                          ("evaluation", 0.0005), ("checkpoints", 0.0)):
        times.add(part, seconds)
    spent = 0.1525
    assert times.line() == (f"time: data {0.002 / spent:.0%}, forward+backward {0.1 / spent:.0%}, "
                            f"optimizer {0.05 / spent:.0%}")  # evaluation: 0.33%, left out
    times.add("data", 0.123456)
    summary = times.summary()
    assert summary["data"] == 0.1255 and summary["compute"] == 0.1, "seconds to 4 decimals"
    assert summary["input_bound"] is False
    times.add("data", 0.1)
    assert times.summary()["input_bound"] is True, "more waiting for batches than computing"
    assert times.line().endswith("(try --num_workers, --in_memory=true or a cheaper augmentation)")
    assert Timings(torch.device("cpu"), enabled=False).line() is None


def test_synced_timing_on_the_cpu_is_the_plain_clock() -> None:
    from expkit.training.timing import Timings

    times = Timings(torch.device("cpu"), sync=True)
    assert times.clock is time.perf_counter, "no device to wait for"
    off = Timings(torch.device("cpu"), enabled=False)
    assert off.clock() == 0.0 and off.row(10, "samples") == {}


def test_flag_values_written_into_a_resumed_runs_command() -> None:
    from expkit.engine.api import as_flags
    from expkit.engine.segments import as_flag

    assert [as_flag(v) for v in (True, False, None, [64, 32], (1, 2), 0.001, 5, "cosine")] == [
        "true", "false", "auto", "[64,32]", "[1,2]", "0.001", "5", "cosine"]
    assert as_flags({"use_tensorboard": True, "init_from": None, "hidden_sizes": [16]}) == [
        "--use_tensorboard=true", "--init_from=auto", "--hidden_sizes=[16]"]
