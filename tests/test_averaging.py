"""Weight averaging (--ema_decay, --swa_start): the averaged weights equal a hand computation
over a few steps, evaluation and the test see them (the trained weights stay the optimizer's),
SWA recomputes batch-norm statistics, both sets are in the checkpoints, and a run stopped
between steps resumes to the very bits of an uninterrupted one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import Workspace, register
from expkit.training.checkpoint import load_checkpoint
from test_resume import STEPS_PER_EPOCH, assert_same_training, reference_and_interrupted

# t's gradient is -1 and SGD's lr is 1, so after k optimizer steps t = k exactly; the loss
# is -t, so an evaluation's loss is minus the evaluated t. A batch norm on x (which adds
# nothing to the loss) keeps running statistics of the training inputs x = 0..49.
WALK = '''
import torch
from pydantic import Field
from torch import nn

from expkit import BaseExperiment, BaseModel, DataInfo, DataSplits, ExperimentArgs, Split


class WalkArgs(ExperimentArgs):
    batch_norm: bool = Field(False, description="a batch norm on the inputs")


class Walk(BaseModel):
    def __init__(self, batch_norm):
        super().__init__()
        self.t = nn.Parameter(torch.zeros(()))
        self.norm = nn.BatchNorm1d(1) if batch_norm else None

    def step(self, batch):
        x, y = batch
        loss = -self.t
        if self.norm is not None:
            loss = loss + 0 * self.norm(x).sum()
        return loss, {"loss": loss.detach() * len(y)}


class WalkExperiment(BaseExperiment[WalkArgs]):
    args_class = WalkArgs
    metrics = {"loss": "min"}
    default_monitor = "val_loss"

    def build_data(self):
        train = Split(torch.arange(50.0).unsqueeze(1), torch.zeros(50))
        held = Split(torch.zeros(20, 1), torch.zeros(20))
        return DataSplits(None, (1,), {}, train=train, val=held, test=held)

    def build_model(self, data: DataInfo):
        return Walk(self.args.batch_norm)
'''

SGD = ("--experiment_id=walk", "--optimizer=sgd", "--lr=1", "--momentum=0", "--batch_size=10",
       "--seed=0")  # 5 optimizer steps an epoch


@pytest.fixture
def walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The registry of the walk experiment."""
    folder = tmp_path / "exp"
    folder.mkdir()
    return register(folder, monkeypatch, "walk", WALK, "WalkExperiment")


def column(run: Path, name: str) -> list[float]:
    return [float(row[name]) for row in csv.DictReader((run / "history.csv").open())]


def test_ema_is_evaluated_tested_and_checkpointed_as_computed_by_hand(workspace: Workspace,
                                                                      walk: str) -> None:
    decay = 0.8
    done = workspace.run(*SGD, "--epochs=3", f"--ema_decay={decay}", registry=walk)
    assert done.returncode == 0, done.stderr
    run = workspace.last_run("walk")
    ema, by_epoch = 0.0, []
    for k in range(1, 16):  # the average starts at the initial weights, t = 0
        ema = decay * ema + (1 - decay) * k
        if k % 5 == 0:
            by_epoch.append(ema)
    assert column(run, "val_loss") == pytest.approx([-e for e in by_epoch], rel=1e-6)
    # the training loss is the trained weights' (t before each step), not the average's
    assert column(run, "train_loss") == pytest.approx([-2.0, -7.0, -12.0], rel=1e-6)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert float(last["model"]["t"]) == pytest.approx(by_epoch[-1], rel=1e-6)
    assert float(last["trained"]["t"]) == 15.0
    assert last["average"] == {"kind": "ema", "count": 15}
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert float(best["model"]["t"]) == pytest.approx(by_epoch[-1], rel=1e-6)
    assert float(best["trained"]["t"]) == 15.0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["test_loss"] == pytest.approx(-by_epoch[-1], rel=1e-6)
    assert metrics["averaged"] == "ema"
    assert "with the last EMA weights (epoch 3)" in done.stdout


def test_swa_averages_from_its_epoch_and_recomputes_batch_norm(workspace: Workspace,
                                                                walk: str) -> None:
    done = workspace.run(*SGD, "--epochs=3", "--swa_start=2", "--batch_norm=true", registry=walk)
    assert done.returncode == 0, done.stderr
    run = workspace.last_run("walk")
    # epoch 1: no average yet, the trained weights (t = 5); then the mean of t after steps 6..
    assert column(run, "val_loss") == pytest.approx([-5.0, -8.0, -10.5], rel=1e-6)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["average"] == {"kind": "swa", "count": 10}
    assert float(last["model"]["t"]) == pytest.approx(10.5, rel=1e-6)
    assert float(last["trained"]["t"]) == 15.0
    # statistics recomputed over the training split in order (5 batches of 10): the mean of
    # the batch means and of the batch variances, not the trained model's running average
    batches = torch.arange(50.0).view(5, 10)
    assert float(last["model"]["norm.running_mean"]) == pytest.approx(float(batches.mean()), rel=1e-6)
    assert float(last["model"]["norm.running_var"]) == pytest.approx(
        float(batches.var(dim=1).mean()), rel=1e-6)
    assert float(last["trained"]["norm.running_mean"]) != pytest.approx(24.5, rel=1e-3)
    assert json.loads((run / "metrics.json").read_text())["test"]["test_loss"] == pytest.approx(-10.5)


def test_swa_by_steps_starts_at_its_step(workspace: Workspace, walk: str) -> None:
    done = workspace.run(*SGD, "--max_steps=8", "--eval_every=4", "--swa_start=3", registry=walk)
    assert done.returncode == 0, done.stderr
    run = workspace.last_run("walk")
    assert column(run, "val_loss") == pytest.approx([-3.5, -5.5], rel=1e-6)  # mean(3..4), mean(3..8)


def test_averaging_flags_are_checked(workspace: Workspace, walk: str) -> None:
    both = workspace.run(*SGD, "--ema_decay=0.9", "--swa_start=1", registry=walk)
    assert both.returncode == 2 and "give one" in both.stderr
    late = workspace.run(*SGD, "--epochs=3", "--swa_start=4", registry=walk)
    assert late.returncode == 2 and "--swa_start=4 is past the end of training" in late.stderr
    bad = workspace.run(*SGD, "--ema_decay=1", registry=walk)
    assert bad.returncode == 2 and "--ema_decay" in bad.stderr
    assert not (workspace.results / "walk").exists(), "nothing is written for bad flags"


@pytest.mark.slow
@pytest.mark.parametrize(("flag", "kind", "count"), [("--ema_decay=0.9", "ema", 3 * STEPS_PER_EPOCH),
                                                     ("--swa_start=2", "swa", 2 * STEPS_PER_EPOCH)])
def test_averaging_stopped_between_steps_resumes_bit_identical(workspace: Workspace, flag: str,
                                                               kind: str, count: int) -> None:
    from conftest import write_idx_set

    write_idx_set(workspace.cache / "mnist", n_train=1000, n_test=200)
    # stopped in epoch 2, after the SWA average has started
    reference, stopped, proc = reference_and_interrupted(workspace, "INT", STEPS_PER_EPOCH + 5, flag)
    assert proc.returncode == 130, proc.stderr
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["partial"] is not None
    resumed = workspace.run("resume", str(stopped))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_training(reference, stopped)  # the history and the averaged weights
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (reference, stopped))
    assert all(torch.equal(a["trained"][k], b["trained"][k]) for k in a["trained"])
    assert a["average"] == b["average"] == {"kind": kind, "count": count}
