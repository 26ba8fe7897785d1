"""Declared metrics: per-example means and metrics of a whole split (R², perplexity) from sums;
the regression example end to end, and its model loaded back without the data."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

import expkit
from conftest import Workspace
from expkit.config.registry import Registry
from expkit.data.base import NamedSplit, Split, examples_in, split_off
from expkit.errors import ExpkitError
from expkit.models.base import BaseModel
from expkit.training.evaluate import Evaluator
from expkit.training.metrics import Metric, compute_metrics, direction, perplexity, produced, r2, stateful


def test_r2_over_a_split_is_exact_from_its_sums() -> None:
    y = torch.tensor([0.0, 0.4, 10.0, 10.2, 10.6], dtype=torch.float64)
    pred = torch.tensor([0.2, 0.1, 10.2, 10.0, 10.4], dtype=torch.float64)
    sums = {"se": float(((pred - y) ** 2).sum()), "y": float(y.sum()), "y2": float((y**2).sum())}
    expected = 1 - float(((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    assert compute_metrics({"r2": r2()}, sums, len(y))["r2"] == pytest.approx(expected, rel=1e-12)
    # the mean of per-batch R² values is not the split's R²: why it is computed from sums
    halves = [1 - float(((pred[s] - y[s]) ** 2).sum() / ((y[s] - y[s].mean()) ** 2).sum())
              for s in (slice(0, 2), slice(2, 5))]
    assert abs(sum(halves) / 2 - expected) > 0.1
    constant = {"se": 1.0, "y": 6.0, "y2": 12.0}  # three targets of 2.0: R² is undefined
    assert math.isnan(compute_metrics({"r2": r2()}, constant, 3)["r2"])


def test_perplexity_is_the_exp_of_the_mean_nll_and_never_overflows() -> None:
    assert compute_metrics({"ppl": perplexity()}, {"nll": 20.0}, 10)["ppl"] == pytest.approx(math.exp(2))
    assert compute_metrics({"ppl": perplexity()}, {"nll": 1e6}, 1)["ppl"] == math.inf


def test_declared_metrics_first_inputs_hidden_and_other_sums_kept_as_means() -> None:
    declared = {"loss": "min", "r2": r2(squared_error="mse"), "mse": "min",
                "f": Metric("max", lambda s, n: s["tp"] / n, ("tp",))}
    sums = {"loss": 4.0, "mse": 8.0, "y": 2.0, "y2": 10.0, "extra": 6.0}
    assert produced(declared, sums) == ["loss", "r2", "mse", "extra"], \
        "f lacks its sum; y and y2 are r2's inputs; mse is declared too; extra is kept"
    values = compute_metrics(declared, sums, 2)
    assert values == {"loss": 2.0, "r2": 1 - 8.0 / (10.0 - 2.0**2 / 2), "mse": 4.0, "extra": 3.0}


@pytest.mark.slow
def test_diabetes_reports_r2_mae_mse_of_the_whole_test_split_and_loads_without_data(
        workspace: Workspace) -> None:
    ws = workspace
    result = ws.fork("--experiment_id=diabetes", "--epochs=8", "--seed=0")
    assert result.returncode == 0, result.stderr
    assert "test_r2" in result.stdout and "best val_r2" in result.stdout
    run = ws.last_run("diabetes")
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["monitor"], metrics["mode"]) == ("val_r2", "max"), "r2's declared direction"
    history = [json.loads(json.dumps(r)) for r in expkit.load_run(run).history]
    assert metrics["best_epoch"] == 1 + max(range(len(history)), key=lambda i: history[i]["val_r2"])

    loaded = expkit.load_run(run, registry="lab.registry")  # the checkpoint alone: no data read
    experiment = Registry.from_module("lab.registry").load("diabetes")(loaded.args)
    test = experiment.build_data().test
    with torch.no_grad():
        predicted = loaded.model.predict(test.x).double()
    y = test.y.double()
    r2_now = 1 - float(((predicted - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    assert metrics["test"]["test_r2"] == pytest.approx(r2_now, rel=1e-4, abs=1e-5)
    assert metrics["test"]["test_mae"] == pytest.approx(float((predicted - y).abs().mean()), rel=1e-4)
    assert metrics["test"]["test_mse"] == pytest.approx(float(((predicted - y) ** 2).mean()), rel=1e-4)
    assert 20 < metrics["test"]["test_mae"] < 200, "in target units, not standardized ones"


def test_a_named_split_slices_every_tensor_alike_and_keeps_its_names() -> None:
    n = 10
    split = NamedSplit(x=torch.arange(n).float().unsqueeze(1), y=torch.arange(n) * 2,
                       weight=torch.arange(n).double() / 10)
    for batch in split.batches(4, torch.Generator().manual_seed(0)):
        assert isinstance(batch, dict) and list(batch) == ["x", "y", "weight"]
        rows = batch["x"].squeeze(1).long()
        assert torch.equal(batch["y"], rows * 2) and torch.allclose(batch["weight"], rows.double() / 10)
    seen = torch.cat([b["y"] for b in split.batches(3)])
    assert torch.equal(seen, torch.arange(n) * 2) and examples_in(next(split.batches(3))) == 3
    kept, off = split_off(split, 0.3, seed=0)
    assert isinstance(kept, NamedSplit) and off is not None and (len(kept), len(off)) == (7, 3)
    assert torch.equal(off["y"], off.x.squeeze(1).long() * 2)
    with pytest.raises(ValueError, match="differ in length: x 10, y 9"):
        NamedSplit(x=torch.zeros(10), y=torch.zeros(9))


class _Mean:
    """A stateful metric with torchmetrics' interface (update, compute, reset)."""

    higher_is_better: bool | None = True

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, values: torch.Tensor) -> None:
        self.total += float(values.sum())
        self.count += len(values)

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.total / self.count)

    def reset(self) -> None:
        self.total, self.count = 0.0, 0


def test_a_stateful_metric_is_evaluated_only_and_needs_a_direction() -> None:
    declared = {"loss": "min", "mean": _Mean()}
    assert stateful(declared["mean"]) and not stateful("max")
    assert produced(declared, ["loss", "mean"], evaluation=False) == ["loss"]
    assert produced(declared, ["loss", "mean"]) == ["loss", "mean"]
    assert direction(declared["mean"]) == "max"
    unknown = _Mean()
    unknown.higher_is_better = None
    with pytest.raises(ExpkitError, match=r"metric 'm': _Mean.higher_is_better is None"):
        direction(unknown, "m")


def test_torchmetrics_objects_compute_over_the_whole_split_in_an_evaluation() -> None:
    """An evaluation updates a copy of each stateful metric batch by batch and computes it
    once: with AUROC (not a mean of per-batch values) the result is the whole split's."""
    from sklearn.metrics import roc_auc_score
    from torchmetrics.classification import BinaryAUROC

    class Scorer(BaseModel):
        def step(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
            score, y = batch
            return score.mean(), {"n": torch.tensor(len(y)), "auroc": (score, y)}

    score = torch.linspace(0, 1, 50)
    y = (torch.arange(50) % 3 == 0).long()
    declared = {"auroc": BinaryAUROC()}
    evaluate = Evaluator(Scorer(), declared, batch_size=7, device=torch.device("cpu"))
    for _ in range(2):  # reset between evaluations
        got = evaluate(Split(score, y), "val")
        assert got["val_auroc"] == pytest.approx(roc_auc_score(y.numpy(), score.numpy()), abs=1e-6)
        assert got["val_n"] == 1.0, "sums beside a stateful metric stay per-example means"
    assert declared["auroc"].update_count == 0, "the declared object is a template, never updated"


# a line fitted by SGD beside a reference metric: predicting every target by 0 ("naive")
LINE = '''
import torch
from torch import nn

from expkit import BaseExperiment, BaseModel, DataInfo, DataSplits, ExperimentArgs, Split


class Line(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def step(self, batch):
        x, y = batch
        error = self.linear(x).squeeze(1) - y
        loss = (error ** 2).mean()
        return loss, {"loss": loss.detach() * len(y), "naive": y.abs().sum()}


class LineExperiment(BaseExperiment[ExperimentArgs]):
    args_class = ExperimentArgs
    metrics = {"loss": "min", "naive": "report"}
    default_monitor = "val_loss"

    def build_data(self):
        x = torch.linspace(-1, 1, 40).unsqueeze(1)
        split = Split(x, 3 * x.squeeze(1) + 1)
        return DataSplits(None, (1,), {}, train=split, val=split, test=split)

    def build_model(self, data: DataInfo):
        return Line()
'''


@pytest.mark.slow  # four short runs
def test_a_metric_declared_for_reporting_is_shown_never_starred_tested_or_monitored(
        workspace: Workspace, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """"naive": "report" is computed and shown by compare (its mean over seeds), but no setting
    is marked best for it, no Welch test is run on it, and it cannot be monitored (so neither
    early stopping nor a sweep can use it); the declared metric beside it is compared as ever."""
    from conftest import register

    registry = register(tmp_path, monkeypatch, "line", LINE, "LineExperiment")
    ws = workspace
    for lr in ("0.1", "0.01"):
        done = ws.run("repeat", "--seeds=0,1", "--experiment_id=line", "--epochs=2",
                      "--optimizer=sgd", f"--lr={lr}", registry=registry)
        assert done.returncode == 0, done.stderr
    run = ws.last_run("line")
    metrics = Workspace.metrics(run)
    assert metrics["directions"]["naive"] == "report"
    assert metrics["test"]["test_naive"] == pytest.approx(float((3 * torch.linspace(-1, 1, 40) + 1)
                                                                .abs().mean()), rel=1e-6)
    text = ws.run("compare", "--experiment_id=line", registry=registry).stdout
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith(("test_", "best_"))}
    assert "*" in rows["test_loss"] and "*" not in rows["test_naive"], text
    assert any(line.startswith("test_loss: ") for line in text.splitlines())
    assert not any(line.startswith(("test_naive:", "best_val_naive:")) for line in text.splitlines())
    markdown = ws.run("compare", "--experiment_id=line", "--format=markdown", registry=registry).stdout
    header, _, *body = ([c.strip() for c in line.strip("|").split("|")]
                        for line in markdown.splitlines())
    column = header.index("test_naive")
    assert any("**" in row[header.index("test_loss")] for row in body)
    assert all("**" not in row[column] for row in body)
    for flags in (("--monitor=val_naive",), ("--monitor=val_naive", "--early_stopping_patience=2")):
        refused = ws.run("--experiment_id=line", *flags, registry=registry)
        assert refused.returncode == 2 and refused.stderr.startswith(
            "run.py: error: --monitor: got 'val_naive', which line declares for reporting only")
