"""Checkpoints and resume: killed or stopped runs continue to exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY, Workspace, write_idx_set
from expkit.errors import ExpkitError
from expkit.training.checkpoint import load_checkpoint, save_checkpoint

# enough data that an epoch takes a noticeable fraction of a second, so a signal lands mid-run
ARGS = ("--experiment_id=mnist", "--epochs=4", "--seed=3", "--hidden_sizes=[256]",
        "--dropout=0.1", "--use_cuda=false")


@pytest.fixture
def big_workspace(workspace: Workspace) -> Workspace:
    write_idx_set(workspace.cache / "mnist", n_train=16000, n_test=500)
    return workspace


def metric_columns(run: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((run / "history.csv").open()))
    return [{k: v for k, v in row.items() if k not in ("epoch_time",)} for row in rows]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]  # type: ignore[no-any-return]


def assert_same_training(a: Path, b: Path) -> None:
    assert metric_columns(a) == metric_columns(b)
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def start(ws: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=ws.root, env=ws.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path_glob: str, root: Path, proc: subprocess.Popen[str], not_in: Path,
             timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in root.glob(path_glob) if not p.is_relative_to(not_in)]
        if found:
            return found[0]
        assert proc.poll() is None, f"process ended early: {proc.communicate()}"
        time.sleep(0.02)
    raise AssertionError(f"{path_glob} never appeared")


def reference_and_interrupted(ws: Workspace, sig: signal.Signals
                              ) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """An uninterrupted run, and the same run hit by `sig` just after its first last.pt."""
    assert ws.cli(*ARGS).returncode == 0
    reference = ws.last_run()
    proc = start(ws, *ARGS)
    wait_for("results/mnist/*/checkpoints/last.pt", ws.root, proc, reference)
    time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    interrupted = next(r for r in ws.run_dirs() if r != reference)
    return reference, interrupted, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigkill_then_resume_equals_an_uninterrupted_run(big_workspace: Workspace) -> None:
    ws = big_workspace
    reference, killed, proc = reference_and_interrupted(ws, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    done = len(list(csv.DictReader((killed / "history.csv").open())))
    assert done < 4, "the run finished before it was killed; make the data larger"
    result = ws.cli("resume", str(killed), entry="expkit")
    assert result.returncode == 0, result.stderr
    assert "resume" in result.stdout and len(ws.run_dirs()) == 2  # same directory, no new one
    assert_same_training(reference, killed)
    assert '"status": "finished"' in (killed / "run.json").read_text()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signal_saves_mid_epoch_and_resume_is_exact(big_workspace: Workspace,
                                                         sig: signal.Signals, code: int) -> None:
    ws = big_workspace
    reference, stopped, proc = reference_and_interrupted(ws, sig)
    assert proc.returncode == code, proc.stderr
    assert "checkpoint saved" in proc.stdout and "expkit resume" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert '"status": "stopped"' in (stopped / "run.json").read_text()
    result = ws.cli(f"--resume={stopped}")  # the run.py spelling
    assert result.returncode == 0, result.stderr
    assert_same_training(reference, stopped)


def test_resume_finished_run_and_train_longer(data_workspace: Workspace) -> None:
    ws = data_workspace
    assert ws.cli("--experiment_id=mnist", "--epochs=2", "--max_train_samples=100").returncode == 0
    run = ws.last_run()
    again = ws.cli("resume", str(run), entry="expkit")
    assert again.returncode == 0 and "already finished after 2 epochs" in again.stdout
    longer = ws.cli("resume", str(run), "--epochs=3", entry="expkit")
    assert longer.returncode == 0, longer.stderr
    assert [r["epoch"] for r in metric_columns(run)] == ["1", "2", "3"]
    assert '"epochs": 3' in (run / "config.json").read_text()


def test_resume_refuses_unsafe_changes(data_workspace: Workspace) -> None:
    ws = data_workspace
    assert ws.cli("--experiment_id=mnist", *TINY).returncode == 0
    result = ws.cli("resume", str(ws.last_run()), "--lr=0.5", "--hidden_sizes=[8]", entry="expkit")
    assert result.returncode == 2
    assert "cannot change on resume: --hidden_sizes: was [128], now [8]" in result.stderr
    assert "cannot change on resume: --lr: was 0.001, now 0.5" in result.stderr


def test_resume_errors_are_clear(data_workspace: Workspace, tmp_path: Path) -> None:
    ws = data_workspace
    not_a_run = ws.cli("resume", str(tmp_path), entry="expkit")
    assert not_a_run.returncode == 2 and "not a run directory" in not_a_run.stderr
    assert ws.cli("--experiment_id=mnist", "--save_checkpoints=false", *TINY).returncode == 0
    no_ckpt = ws.cli("resume", str(ws.last_run()), entry="expkit")
    assert no_ckpt.returncode == 1 and "no checkpoints/last.pt" in no_ckpt.stderr
    assert ws.cli("--experiment_id=mnist", *TINY).returncode == 0
    last = ws.last_run() / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    corrupt = ws.cli("resume", str(ws.last_run()), entry="expkit")
    assert corrupt.returncode == 1 and "Traceback" not in corrupt.stderr
    assert f"{last}: not a readable checkpoint" in corrupt.stderr


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1  # the previous file survived the failed write
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # and no temp file is left
    (tmp_path / "other.pt").write_bytes(b"")
    with pytest.raises(ExpkitError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ExpkitError, match="not an expkit checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
