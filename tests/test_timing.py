"""Where the time goes: each evaluation's throughput (samples, or a token stream's tokens, per
second of training) and seconds of data, compute, optimizer and evaluation; the run's split in
metrics.json and on the summary's `time:` line, input-bound runs named; and a torch.profiler
trace of chosen steps that Perfetto opens (Chrome trace JSON)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import Workspace
from expkit.training.timing import PARTS, Timings

TRAINING = ("data_time", "compute_time", "optimizer_time")


def rows(run: Path) -> list[dict[str, float]]:
    with (run / "history.csv").open() as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def test_each_evaluation_says_its_throughput_and_where_its_time_went(workspace: Workspace) -> None:
    done = workspace.run("--experiment_id=diabetes", "--epochs=2", "--seed=0", "--profile=3")
    assert done.returncode == 0, done.stderr
    run = workspace.last_run("diabetes")
    history = rows(run)
    train = 319  # diabetes' training split (442 patients less val and test)
    for row in history:
        training = sum(row[k] for k in TRAINING)
        assert row["samples_per_second"] * training == pytest.approx(train, rel=1e-9), \
            "the examples trained on, over the seconds spent training them"
        assert all(row[k] >= 0 for k in (*TRAINING, "evaluation_time"))
        assert training + row["evaluation_time"] <= row["epoch_time"]
    summary = json.loads((run / "metrics.json").read_text())["time"]
    assert set(summary) == {*PARTS, "input_bound"} and summary["input_bound"] is False
    assert summary["data"] == pytest.approx(sum(r["data_time"] for r in history), abs=1e-3)
    assert summary["checkpoints"] > 0 and summary["evaluation"] == pytest.approx(
        sum(r["evaluation_time"] for r in history), abs=1e-3)
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("time: ")]
    assert "forward+backward " in line and "input-bound" not in line
    assert " samples/s  " in done.stdout, "the epoch line shows the throughput"
    trace = json.loads((run / "profile" / "trace.json").read_text())
    steps = {e["name"] for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#")}
    assert steps == {"ProfilerStep#1", "ProfilerStep#2", "ProfilerStep#3"}, "the steps asked for"
    assert any(e.get("name") == "aten::addmm" for e in trace["traceEvents"]), "the model's own ops"
    assert any("Input Dims" in e.get("args", {}) for e in trace["traceEvents"]), "with shapes"


def test_a_profile_longer_than_the_run_traces_each_optimizer_step_once(workspace: Workspace) -> None:
    """--profile=100 on a run of 20 optimizer steps (2 epochs of 10): steps 2 to 20 are traced,
    one span each with its optimizer step, and no span holds an evaluation (the run's last
    step ends the trace)."""
    done = workspace.run("--experiment_id=diabetes", "--epochs=2", "--seed=0", "--profile=100")
    assert done.returncode == 0, done.stderr
    run = workspace.last_run("diabetes")
    total = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["global_step"]
    assert total == 20
    trace = json.loads((run / "profile" / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#")]
    assert len(spans) == total - 1, sorted(e["name"] for e in spans)
    steps = [e for e in trace["traceEvents"] if e.get("name", "").startswith("Optimizer.step#")]
    assert len(steps) == len(spans), "one optimizer step in each span"


def test_a_token_stream_counts_tokens(workspace: Workspace) -> None:
    done = workspace.run("--experiment_id=char_lm", "--epochs=1", "--seed=0", "--max_chars=20000",
                         "--n_layer=1", "--n_embd=32", "--block_size=32", "--timing=true")
    assert done.returncode == 0, done.stderr
    [row] = rows(workspace.last_run("char_lm"))
    windows = 562  # 18,000 training characters in windows of 32
    assert row["tokens_per_second"] * sum(row[k] for k in TRAINING) == pytest.approx(windows * 32, rel=1e-9)
    assert "samples_per_second" not in row


def test_off_means_no_columns_and_no_line(workspace: Workspace) -> None:
    done = workspace.run("--experiment_id=diabetes", "--epochs=1", "--seed=0", "--timing=false",
                         "--grad_norm=false")
    assert done.returncode == 0, done.stderr
    run = workspace.last_run("diabetes")
    [row] = rows(run)
    assert not any(k.endswith(("_per_second", "_time")) and k != "epoch_time" for k in row)
    assert "grad_norm" not in row and "time" not in json.loads((run / "metrics.json").read_text())
    assert not any(ln.startswith("time: ") for ln in done.stdout.splitlines())


def test_a_run_that_waits_for_its_batches_is_named_input_bound() -> None:
    times = Timings(torch.device("cpu"))
    for part, seconds in (("data", 3.0), ("compute", 1.5), ("optimizer", 0.5), ("evaluation", 1.0)):
        times.add(part, seconds)
    assert times.summary()["input_bound"] is True
    line = times.line()
    assert line is not None and line.startswith("time: data 50%, forward+backward 25%, optimizer 8%, "
                                                "evaluation 17%; input-bound: ")
    times.add("compute", 1.0)
    assert times.summary()["input_bound"] is False  # 3 s of data, 3 s of computing: not more
