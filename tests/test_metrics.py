"""Declared metrics: per-example means and metrics of a whole split (R², perplexity) from sums;
the regression example end to end, and its model loaded back without the data."""

from __future__ import annotations

import json
import math

import pytest
import torch

import expkit
from conftest import Workspace
from expkit.metrics import Metric, compute_metrics, perplexity, produced, r2
from expkit.registry import Registry


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
    result = ws.cli("--experiment_id=diabetes", "--epochs=8", "--seed=0")
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
