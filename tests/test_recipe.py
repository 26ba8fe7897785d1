"""An experiment changes the recipe by subclassing: new optimizer and scheduler args are
flags, reach its build_optimizer/build_scheduler, and are part of what a resume must keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import expkit
from conftest import Workspace, register

OWN_RECIPE = '''
from typing import Literal

import torch
from pydantic import Field

from expkit.training.optim import OptimizerArgs, Schedule, SchedulerArgs
from lab.experiments.mnist import MnistArgs, MnistExperiment


class BetaOptimizerArgs(OptimizerArgs):
    beta2: float = Field(0.999, gt=0, lt=1, description="Adam's second-moment decay")


class DecaySchedulerArgs(SchedulerArgs):
    name: Literal["none", "step", "cosine", "plateau", "onecycle", "exponential"] = "none"
    decay: float = Field(0.9, gt=0, le=1, description="exponential: lr factor per epoch")


class OwnArgs(MnistArgs):
    optimizer: BetaOptimizerArgs = Field(default_factory=BetaOptimizerArgs)
    scheduler: DecaySchedulerArgs = Field(default_factory=DecaySchedulerArgs)


class OwnRecipe(MnistExperiment):
    args_class = OwnArgs

    def optimizer_kwargs(self):
        a = self.args.optimizer
        return {"betas": (0.9, a.beta2)} if a.name in ("adam", "adamw") else {}

    def build_scheduler(self, optimizer, steps_per_epoch):
        if self.args.scheduler.name != "exponential":
            return super().build_scheduler(optimizer, steps_per_epoch)
        return Schedule(torch.optim.lr_scheduler.ExponentialLR(optimizer, self.args.scheduler.decay),
                        "epoch")
'''


def test_an_experiment_adds_optimizer_and_scheduler_args_by_subclassing(
        data_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New fields of OptimizerArgs/SchedulerArgs subclasses are flags, reach the overridden
    build_optimizer/build_scheduler, and are part of what a resume must keep."""
    ws = data_workspace
    own = register(tmp_path, monkeypatch, "own_recipe", OWN_RECIPE, "OwnRecipe")
    shown = ws.run("--experiment_id=own_recipe", "--help", registry=own)
    assert "--beta2" in shown.stdout and "--decay" in shown.stdout and "exponential" in shown.stdout
    result = ws.run("--experiment_id=own_recipe", "--epochs=3", "--max_train_samples=200",
                    "--beta2=0.95", "--scheduler=exponential", "--decay=0.5", registry=own)
    assert result.returncode == 0, result.stderr
    run = ws.last_run("own_recipe")
    lrs = [row["lr"] for row in expkit.load_run(run, registry=own).history]
    assert lrs == pytest.approx([1e-3, 5e-4, 2.5e-4])
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.0
    config = json.loads((run / "config.json").read_text())
    assert config["optimizer"]["beta2"] == 0.95 and config["scheduler"]["decay"] == 0.5
    changed = ws.run("--resume=" + str(run), "--epochs=4", "--decay=0.1", registry=own)
    assert changed.returncode == 2 and "--decay: was 0.5, now 0.1" in changed.stderr

    # the built-in flags still apply beside the new one: --optimizer, --weight_decay, --fused
    for flags, kind, fused in ((("--optimizer=adamw",), "AdamW", True),
                               (("--optimizer=adam", "--fused=false"), "Adam", None)):
        done = ws.run("--experiment_id=own_recipe", "--epochs=1", "--max_train_samples=100",
                      "--beta2=0.9", "--weight_decay=0.25", *flags, registry=own)
        assert done.returncode == 0, done.stderr
        optimizer = expkit.load_run(ws.last_run("own_recipe"), registry=own).experiment.build_optimizer(
            torch.nn.Linear(2, 2))
        group = optimizer.param_groups[0]
        assert type(optimizer).__name__ == kind and group["betas"] == (0.9, 0.9)
        assert group["weight_decay"] == 0.25 and group["fused"] is fused
        saved = torch.load(ws.last_run("own_recipe") / "checkpoints" / "last.pt", weights_only=True)
        assert saved["optimizer"]["param_groups"][0]["weight_decay"] == 0.25


VAL_ARTIFACTS = '''
import torch

from lab.experiments.mnist import MnistExperiment


class ValArtifacts(MnistExperiment):
    def evaluation_artifacts(self, trainer):
        x = trainer.val_split.x[:8]
        assert x.device == trainer.device
        predicted = trainer.model(x).argmax(1).tolist()
        return {"val": f"{trainer.model.training} {torch.is_grad_enabled()} {trainer.device.type} "
                       f"{predicted}"}
'''


def test_artifacts_see_the_validation_split_in_eval_mode(
        data_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluation_artifacts reaches the validation split and the device, with the model in eval
    mode and no gradients (dropout off: its outputs are the evaluated model's)."""
    ws = data_workspace
    own = register(tmp_path, monkeypatch, "val_artifacts", VAL_ARTIFACTS, "ValArtifacts")
    done = ws.run("--experiment_id=val_artifacts", "--epochs=2", "--max_train_samples=200",
                  "--dropout=0.5", "--seed=0", registry=own)
    assert done.returncode == 0, done.stderr
    run = ws.last_run("val_artifacts")
    from expkit.config.machine import MachineConfig

    loaded = expkit.load_run(run, "last", registry=own, machine=MachineConfig(cache_dir=ws.cache))
    x = loaded.experiment.build_data().val.x[:8]
    with torch.no_grad():
        expected = loaded.model(x).argmax(1).tolist()
    assert (run / "artifacts" / "val" / "2.txt").read_text() == f"False False cpu {expected}"
    assert loaded.model.training is False


WITH_TRACKER = '''
import expkit
from lab.experiments.mnist import MnistExperiment

SEEN = []


class EpochCounter(expkit.Tracker):  # only what it needs: the other methods do nothing
    def log_epoch(self, rows):
        SEEN.append(len(rows))


class Incomplete:  # not a Tracker: lacks most methods
    def log_epoch(self, rows):
        pass


class WithTracker(MnistExperiment):
    tracker = EpochCounter

    def build_trackers(self, run_dir):
        return [*super().build_trackers(run_dir), self.tracker()]
'''


def test_an_experiments_own_tracker_subclasses_tracker_and_writes_only_what_it_needs(
        data_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = data_workspace
    registry = register(tmp_path, monkeypatch, "with_tracker", WITH_TRACKER, "WithTracker")
    done = ws.run("--experiment_id=with_tracker", "--epochs=2", "--max_train_samples=100",
                  registry=registry)
    assert done.returncode == 0, done.stderr
    import with_tracker

    assert with_tracker.SEEN == [1, 2]
    record = json.loads((ws.last_run("with_tracker") / "run.json").read_text())
    assert record["status"] == "finished" and "mlflow" not in record
    monkeypatch.setattr(with_tracker.WithTracker, "tracker", with_tracker.Incomplete)
    refused = ws.run("--experiment_id=with_tracker", "--epochs=1", "--max_train_samples=100",
                     registry=registry)
    assert refused.returncode == 1
    assert "WithTracker.build_trackers: Incomplete lacks log_config, restore, log_artifact" \
        in refused.stderr and "subclass expkit.Tracker" in refused.stderr, refused.stderr


def test_data_args_by_subclassing_holdout_args_and_the_seed_in_build_data(
        workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's SineArgs example, as written (with a model added): its fields are flags,
    `self.args.seed` in build_data is the run's seed (drawn when not given), and the data it
    generates differs from seed to seed while HoldoutArgs' split stays the same."""
    import re
    import textwrap

    from conftest import REPO

    page = (REPO / "docs" / "how-to" / "write-an-experiment.md").read_text()
    block = re.search(r"```python\n(  class SineArgs.*?)```", page, re.S)
    assert block, "the page shows the SineArgs example"
    source = ("import torch\nfrom pydantic import Field\nfrom torch import nn\n"
              "from expkit import (BaseExperiment, BaseModel, DataSplits, ExperimentArgs, "
              "HoldoutArgs, Split)\n\n" + textwrap.dedent(block.group(1)) + '''
    args_class = MyArgs
    metrics = {"loss": "min"}
    default_monitor = "val_loss"

    def build_model(self, data):
        return Line()


class Line(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def step(self, batch):
        x, y = batch
        loss = ((self.linear(x).squeeze(1) - y) ** 2).mean()
        return loss, {"loss": loss.detach() * len(y)}
''')
    registry = register(tmp_path, monkeypatch, "sine", source, "MyExperiment")
    shown = workspace.run("--experiment_id=sine", "--help", registry=registry)
    assert "--n_examples" in shown.stdout and "--noise" in shown.stdout
    data = []
    for seed in ("--seed=0", "--seed=1", None):
        flags = ["--experiment_id=sine", "--epochs=1", "--n_examples=200", "--noise=0.0"]
        done = workspace.run(*flags, *([seed] if seed else []), registry=registry)
        assert done.returncode == 0, done.stderr
        loaded = expkit.load_run(workspace.last_run("sine"), registry=registry)
        assert loaded.args.seed == (int(seed[7:]) if seed else loaded.args.seed) is not None
        data.append(loaded.experiment.build_data())
    assert len(data[0].train) == len(data[1].train) == 144  # 200 less 20% test, less 10% val
    assert not torch.equal(data[0].train.x, data[1].train.x), "the seed varies the generated data"
    assert torch.equal(data[0].train.y, torch.sin(data[0].train.x[:, 0])), "--noise=0.0 reached it"
