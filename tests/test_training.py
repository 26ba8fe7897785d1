"""Real learning: digits offline, the real Fashion-MNIST end to end, and the wild_west script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Workspace

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_digits_reaches_90_percent_validation_accuracy(workspace: Workspace) -> None:
    result = workspace.fork("--experiment_id=mnist", "--dataset=digits", "--epochs=10",
                            "--batch_size=32", "--seed=0")
    assert result.returncode == 0, result.stderr
    assert workspace.metrics(workspace.last_run())["best"]["val_acc"] >= 0.90


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="apt-get install dataset-fashion-mnist (.ci/run does)")
def test_real_fashion_mnist_end_to_end(workspace: Workspace) -> None:
    result = workspace.cli("--experiment_id=mnist", "--dataset=fashion_mnist", "--epochs=1",
                           "--hidden_sizes=[64]", "--use_cuda=false", "--seed=0")
    assert result.returncode == 0, result.stderr
    run = workspace.last_run()
    metrics = workspace.metrics(run)
    assert metrics["test"]["test_acc"] >= 0.82
    assert (run / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((run / "history.csv").read_text().splitlines()) == 2
    print(f"fashion-mnist test_acc {metrics['test']['test_acc']:.4f}")


def test_wild_west_script_trains_outside_the_framework(data_workspace: Workspace) -> None:
    result = subprocess.run([sys.executable, str(REPO / "wild_west" / "train_mlp.py"),
                             "--epochs", "2"], cwd=data_workspace.root, env=data_workspace.env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.strip().splitlines()[-1].rsplit(" ", 1)[1])
    assert accuracy > 0.8
    assert not data_workspace.results.exists()  # out of the framework: no run directory
