"""The performance paths: streaming data past the memory budget, torch.compile, channels-last.

Their speed is measured in bench/, not here; these tests check they give correct runs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from conftest import Workspace, write_idx_set
from expkit.training.checkpoint import load_checkpoint


@pytest.fixture
def disk_workspace(workspace: Workspace) -> Workspace:
    """4,000 generated training images (12.5 MB as float32), stored uncompressed on disk."""
    folder = workspace.cache / "mnist"
    for path in write_idx_set(folder, n_train=4000, n_test=400, seed=2):
        raw = path.with_suffix("")
        raw.write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    return workspace


@pytest.mark.slow
def test_data_over_the_budget_streams_and_trains_the_same(disk_workspace: Workspace) -> None:
    ws = disk_workspace
    common = ("--experiment_id=mnist", "--epochs=2", "--seed=4", "--num_workers=2")
    streamed = ws.run(*common, "--memory_budget_mb=5")
    assert streamed.returncode == 0, streamed.stderr
    assert "streamed from disk" in streamed.stdout
    stream_run = ws.last_run()
    assert json.loads((stream_run / "run.json").read_text())["data"]["streamed"] is True
    in_memory = ws.run(*common, "--memory_budget_mb=100")
    assert in_memory.returncode == 0 and "streamed" not in in_memory.stdout
    a, b = ws.metrics(stream_run), ws.metrics(ws.last_run())
    assert a["test"]["test_acc"] > 0.9
    for key in ("train_loss", "val_loss", "val_acc"):  # same order, same batches, same numbers
        assert a["final"][key] == pytest.approx(b["final"][key], abs=1e-5)
    forced = ws.run("--experiment_id=mnist", "--epochs=1", "--in_memory=false")
    assert forced.returncode == 0 and "streamed from disk" in forced.stdout


@pytest.mark.slow
def test_compile_on_cpu(data_workspace: Workspace) -> None:
    result = data_workspace.cli("--experiment_id=mnist", "--compile=true", "--epochs=1",
                                "--max_train_samples=200", "--seed=0", "--hidden_sizes=[16]",
                                timeout=600)
    assert result.returncode == 0, result.stderr
    run = data_workspace.last_run()
    assert data_workspace.metrics(run)["test"]["test_acc"] > 0.3
    generated = Path(data_workspace.env["TORCHINDUCTOR_CACHE_DIR"]).rglob("*.py")
    assert any("def call(" in p.read_text() for p in generated), "--compile=true compiled nothing"
    keys = load_checkpoint(run / "checkpoints" / "last.pt")["model"].keys()
    assert all(not k.startswith("_orig_mod") for k in keys)  # loads into an uncompiled model


def test_channels_last_gives_the_same_training(data_workspace: Workspace) -> None:
    ws = data_workspace
    common = ("--experiment_id=fashion_cnn", "--epochs=1", "--max_train_samples=200", "--seed=0")
    assert ws.run(*common).returncode == 0
    plain = ws.metrics(ws.last_run("fashion_cnn"))
    result = ws.run(*common, "--channels_last=true")
    assert result.returncode == 0, result.stderr
    fast = ws.metrics(ws.last_run("fashion_cnn"))
    assert fast["final"]["train_loss"] == pytest.approx(plain["final"]["train_loss"], rel=1e-4)
    weights = load_checkpoint(ws.last_run("fashion_cnn") / "checkpoints" / "last.pt")["model"]
    convs = [w for w in weights.values() if w.dim() == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs), \
        "--channels_last=true trained a model whose conv weights are not channels-last"
