"""The gradient's health: its norm in the history at each evaluation (and per top-level module
on request), equal to a hand computation, and a diverged run that names the optimizer step and
the first parameter whose gradient became non-finite."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from conftest import Workspace, register

# t counts the optimizer steps (its gradient is -1 and SGD's lr is 1: t = steps taken); w's
# gradient is 1/(K - t): known at every step, infinite at the step that starts with t = K
CLOCK = '''
import torch
from pydantic import Field
from torch import nn

from expkit import BaseExperiment, BaseModel, DataInfo, DataSplits, ExperimentArgs, Split


class ClockArgs(ExperimentArgs):
    k: int = Field(100, description="the step count at which w's gradient is infinite")


class Clock(BaseModel):
    def __init__(self, k):
        super().__init__()
        self.t = nn.Parameter(torch.zeros(()))
        self.w = nn.Parameter(torch.zeros(()))
        self.k = k

    def step(self, batch):
        x, y = batch
        loss = -self.t + self.w / (self.k - self.t.detach())
        return loss, {"loss": loss.detach() * len(y)}


class ClockExperiment(BaseExperiment[ClockArgs]):
    args_class = ClockArgs
    metrics = {"loss": "min"}
    default_monitor = "val_loss"

    def build_data(self):
        split = Split(torch.zeros(50, 1), torch.zeros(50))
        return DataSplits(None, (1,), {}, train=split, val=split, test=split)

    def build_model(self, data: DataInfo):
        return Clock(self.args.k)
'''

SGD = ("--optimizer=sgd", "--lr=1", "--momentum=0", "--batch_size=10", "--seed=0")  # 5 steps an epoch


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The registry of the clock experiment."""
    folder = tmp_path / "exp"
    folder.mkdir()
    return register(folder, monkeypatch, "clock", CLOCK, "ClockExperiment")


def test_the_gradient_norm_per_evaluation_is_the_mean_over_its_steps(workspace: Workspace,
                                                                      clock: str) -> None:
    k = 100
    done = workspace.run("--experiment_id=clock", "--epochs=2", f"--k={k}", *SGD,
                         "--grad_norm_by_module=true", registry=clock)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((workspace.last_run("clock") / "history.csv").open()))
    for epoch, row in enumerate(rows, start=1):
        steps = range(5 * (epoch - 1), 5 * epoch)  # t before each of the epoch's steps
        w = [1 / (k - t) for t in steps]
        assert float(row["grad_norm"]) == pytest.approx(sum(math.hypot(1, g) for g in w) / 5, rel=1e-6)
        assert float(row["grad_norm/t"]) == pytest.approx(1.0, rel=1e-6)
        assert float(row["grad_norm/w"]) == pytest.approx(sum(w) / 5, rel=1e-6)
    assert "grad_norm " in done.stdout, "the epoch line shows it"


def test_a_diverged_run_names_the_step_and_the_parameter(workspace: Workspace, clock: str) -> None:
    k = 7  # w's gradient is infinite at the 8th optimizer step (epoch 2), t's never
    done = workspace.run("--experiment_id=clock", "--epochs=3", f"--k={k}", *SGD, registry=clock)
    assert done.returncode == 1, "a diverged run fails (its files complete)"
    run = workspace.last_run("clock")
    metrics = json.loads((run / "metrics.json").read_text())
    reason = metrics["stop_reason"]
    assert "in epoch 2" in reason, reason
    assert f"its gradient first became non-finite at optimizer step {k + 1}, in w;" in reason, reason
    assert reason in done.stdout + done.stderr
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 2 and float(rows[0]["grad_norm"]) > 0
