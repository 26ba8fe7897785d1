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

from expkit.training.optim import OptimizerArgs, Schedule, SchedulerArgs, build_optimizer
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

    def build_optimizer(self, model):
        a = self.args.optimizer
        if a.name != "adam":
            return build_optimizer(a, model.parameters())
        return torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, a.beta2))

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
    config = json.loads((run / "config.json").read_text())
    assert config["optimizer"]["beta2"] == 0.95 and config["scheduler"]["decay"] == 0.5
    changed = ws.run("--resume=" + str(run), "--epochs=4", "--decay=0.1", registry=own)
    assert changed.returncode == 2 and "--decay: was 0.5, now 0.1" in changed.stderr
