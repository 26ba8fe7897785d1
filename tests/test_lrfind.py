"""`expkit lr-find`: Smith's learning-rate range test on a convex quadratic, whose best
constant learning rate is known (1/curvature for gradient descent): the suggestion lies within
the stated factor of it, for two curvatures; the test leaves a curve and a plot, not a run."""

from __future__ import annotations

import csv
import itertools
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import Workspace, register

QUADRATIC = '''
import torch
from pydantic import Field
from torch import nn

from expkit import BaseExperiment, BaseModel, DataSplits, ExperimentArgs, Split


class QuadArgs(ExperimentArgs):
    curvature: float = Field(4.0, gt=0, description="the loss's second derivative")


class Quad(BaseModel):
    """loss = curvature / 2 * mean |w - x|^2 over a batch of points x: its Hessian is curvature
    times the identity, so gradient descent's best constant rate is 1/curvature (and above
    2/curvature it diverges)."""

    def __init__(self, curvature):
        super().__init__()
        self.w = nn.Parameter(torch.full((8,), 3.0))
        self.curvature = curvature

    def step(self, batch):
        x, y = batch
        loss = 0.5 * self.curvature * ((self.w - x) ** 2).sum(1).mean()
        return loss, {"loss": loss.detach() * len(y)}


class QuadExperiment(BaseExperiment[QuadArgs]):
    args_class = QuadArgs
    metrics = {"loss": "min"}

    def build_data(self):
        points = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        split = Split(points, torch.zeros(64))
        return DataSplits(None, (8,), {}, train=split, val=split, test=split)

    def build_model(self, data):
        return Quad(self.args.curvature)
'''


@pytest.mark.parametrize("curvature", [4.0, 100.0])
def test_the_suggestion_is_near_the_best_rate_of_a_quadratic(workspace: Workspace, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            curvature: float) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    registry = register(folder, monkeypatch, "quad", QUADRATIC, "QuadExperiment")
    done = workspace.run("lr-find", "--experiment_id=quad", f"--curvature={curvature}", "--optimizer=sgd",
                         "--momentum=0", "--batch_size=8", "--seed=0", "--lr_min=1e-4", "--lr_max=10",
                         "--steps=100", registry=registry)
    assert done.returncode == 0, done.stderr
    found = re.search(r"^suggested lr: (\S+) \(the learning rate at the lowest smoothed loss, divided "
                      r"by 10\)$", done.stdout, re.M)
    assert found, done.stdout
    best = 1 / curvature
    assert best / 10 <= float(found.group(1)) <= best * 10, (found.group(1), best)
    assert "the loss blew up at lr" in done.stdout, "stopped where the loss diverged (above 2/curvature)"
    [test_dir] = (workspace.results / "lr_find").iterdir()
    with (test_dir / "lr_find.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert 5 < len(rows) < 100 and float(rows[0]["lr"]) == pytest.approx(1e-4)
    assert all(float(b["lr"]) > float(a["lr"]) for a, b in itertools.pairwise(rows)), "rising"
    # the curve and the suggestion by their stated rules, recomputed from lr_find.csv's losses:
    # the bias-corrected moving average (beta 0.98), the stop at the first step whose smoothed
    # loss passes 4x the lowest before it, the suggestion = lr at the lowest smoothed / 10
    losses = [float(r["loss"]) for r in rows]
    average, smoothed = 0.0, []
    for k, loss in enumerate(losses, start=1):
        average = 0.98 * average + 0.02 * loss
        smoothed.append(average / (1 - 0.98**k))
    assert [float(r["smoothed_loss"]) for r in rows] == pytest.approx(smoothed, rel=1e-12)
    lowest = [min(smoothed[:k]) for k in range(1, len(smoothed))]
    past = [k for k in range(1, len(smoothed)) if smoothed[k] > 4 * lowest[k - 1]
            or not math.isfinite(losses[k])]
    assert past and past[0] == len(rows) - 1, "the test stops at the first step past 4x"
    finite = [(v, float(r["lr"])) for v, r in zip(smoothed, rows, strict=True) if math.isfinite(v)]
    assert found.group(1) == f"{min(finite)[1] / 10:.3g}"
    # the losses themselves, by a range test written out by hand over the same batches (the
    # trainer's generator seeded with --seed, the rate rising by one factor a step)
    assert losses == pytest.approx(by_hand(curvature, len(rows)), rel=1e-5)
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert f"(step {len(rows)})" in done.stdout
    assert (test_dir / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (workspace.results / "quad").exists(), "a range test is not a run"


def by_hand(curvature: float, steps: int, total: int = 100) -> list[float]:
    """The first `steps` losses of a range test from 1e-4 to 10 over `total` steps on the
    quadratic, plain SGD, batches of 8 from a generator seeded with 0, pass after pass."""
    from expkit.data.base import Split

    points = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    split, generator = Split(points, torch.zeros(64)), torch.Generator().manual_seed(0)
    w = torch.full((8,), 3.0, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=1e-4, momentum=0)
    losses: list[float] = []
    while len(losses) < steps:
        for x, _ in split.batches(8, generator):
            optimizer.param_groups[0]["lr"] = 1e-4 * (10 / 1e-4) ** (len(losses) / (total - 1))
            loss = 0.5 * curvature * ((w - x) ** 2).sum(1).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss))
            if len(losses) == steps:
                break
    return losses


def test_a_range_the_wrong_way_round_is_a_usage_error(workspace: Workspace) -> None:
    done = workspace.run("lr-find", "--experiment_id=mnist", "--lr_min=1", "--lr_max=0.1")
    assert done.returncode == 2 and "--lr_min=1 must be below --lr_max=0.1" in done.stderr
