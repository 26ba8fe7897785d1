"""Checkpoints and resume: killed or stopped runs continue to exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import TINY, Workspace, write_idx_set
from expkit.errors import ExpkitError
from expkit.rundir.results import wall_clock
from expkit.training.checkpoint import load_checkpoint, save_checkpoint

ARGS = ("--experiment_id=mnist", "--epochs=3", "--seed=3", "--hidden_sizes=[64]",
        "--dropout=0.1", "--use_cuda=false")
STEPS_PER_EPOCH = 15  # 1,000 examples, 10% for validation, batch 64
HOOKS = str(Path(__file__).parent / "hooks")  # sitecustomize.py: a signal at a chosen step


@pytest.fixture
def big_workspace(workspace: Workspace) -> Workspace:
    write_idx_set(workspace.cache / "mnist", n_train=1000, n_test=200)
    return workspace


def metric_columns(run: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((run / "history.csv").open()))
    return [{k: v for k, v in row.items() if not wall_clock(k)} for row in rows]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]  # type: ignore[no-any-return]


def assert_same_training(a: Path, b: Path) -> None:
    assert metric_columns(a) == metric_columns(b), "history.csv differs from the uninterrupted run"
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), \
        "the final weights differ from the uninterrupted run's"


def reference_and_interrupted(ws: Workspace, sig: str, step: int, *flags: str
                              ) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """An uninterrupted run, and the same run sent `sig` (KILL, INT, TERM) by itself right
    after its `step`-th optimizer step (tests/hooks: the moment is exact on any machine);
    both with ARGS and `flags`."""
    assert ws.run(*ARGS, *flags).returncode == 0
    reference = ws.last_run()
    result = ws.fork(*ARGS, *flags, env={"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": f"step:{step}:{sig}"})
    interrupted = next(r for r in ws.run_dirs() if r != reference)
    return reference, interrupted, result


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(big_workspace: Workspace) -> None:
    ws = big_workspace
    reference, killed, proc = reference_and_interrupted(ws, "KILL", STEPS_PER_EPOCH + 5)
    assert proc.returncode == -signal.SIGKILL
    assert len(list(csv.DictReader((killed / "history.csv").open()))) == 1
    result = ws.cli("resume", str(killed), entry="expkit")
    assert result.returncode == 0, result.stderr
    assert "resume" in result.stdout and len(ws.run_dirs()) == 2  # same directory, no new one
    assert_same_training(reference, killed)
    assert '"status": "finished"' in (killed / "run.json").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [("INT", 130), ("TERM", 143)])
def test_stop_signal_saves_mid_epoch_and_resume_is_exact(big_workspace: Workspace,
                                                         sig: str, code: int) -> None:
    ws = big_workspace
    reference, stopped, proc = reference_and_interrupted(ws, sig, STEPS_PER_EPOCH + 5)
    assert proc.returncode == code, proc.stderr
    assert "checkpoint saved" in proc.stdout and f"SIG{sig} received" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert '"status": "stopped"' in (stopped / "run.json").read_text()
    saved = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert saved["epoch"] == 1 and saved["partial"] is not None, \
        "a stop signal must save a checkpoint mid-epoch, not wait for the epoch's end"
    assert saved["partial"]["batches"] == 5 and saved["global_step"] == STEPS_PER_EPOCH + 5, \
        "the mid-epoch checkpoint is at the step the signal came after"
    command = json.loads((stopped / "run.json").read_text())["command"]
    result = ws.run(f"--resume={stopped}")  # the run.py spelling
    assert result.returncode == 0, result.stderr
    assert_same_training(reference, stopped)
    record = json.loads((stopped / "run.json").read_text())
    assert record["command"] == command, "nothing changed on resume: the same command"
    assert [set(s) for s in record["segments"]] == [{"at", "processes"}] * 2
    assert record["distributed"] is None, "one process: no process group"
    # the resumed epoch's throughput: this segment's examples (900 - 5 batches of 64) over
    # this segment's training seconds, not the whole epoch's examples
    row = list(csv.DictReader((stopped / "history.csv").open()))[1]
    seconds = sum(float(row[f"{part}_time"]) for part in ("data", "compute", "optimizer"))
    assert float(row["samples_per_second"]) * seconds == pytest.approx(900 - 5 * 64, rel=1e-6)


def test_a_second_ctrl_c_aborts_at_once_and_keeps_the_last_whole_checkpoint(
        data_workspace: Workspace) -> None:
    """The first SIGINT asks for a mid-epoch checkpoint; a second one, while it is being
    written, aborts there: the half-written file is dropped, last.pt stays epoch 1's."""
    ws = data_workspace  # 540 training examples, batch 64: 9 steps an epoch
    args = ("--experiment_id=mnist", "--epochs=3", "--seed=0")
    second = {"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": "step:12:INT,write:last.pt:2:INT"}
    aborted = ws.fork(*args, env=second)
    assert aborted.returncode == 130, aborted.stderr
    assert "aborted by a second SIGINT" in aborted.stdout and "Traceback" not in aborted.stderr
    run = ws.last_run()
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["epoch"] == 1 and saved["partial"] is None, "the last whole checkpoint is kept"
    assert not list((run / "checkpoints").glob(".*.tmp")), "no half-written file is left"
    assert '"status": "stopped"' in (run / "run.json").read_text()
    resumed = ws.run("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in metric_columns(run)] == ["1", "2", "3"]


def test_resume_finished_run_and_train_longer(data_workspace: Workspace) -> None:
    ws = data_workspace
    assert ws.run("--experiment_id=mnist", "--epochs=2", "--max_train_samples=100").returncode == 0
    run = ws.last_run()
    again = ws.run("resume", str(run))
    assert again.returncode == 0 and "already finished after 2 epochs" in again.stdout
    longer = ws.run("resume", str(run), "--epochs=3")
    assert longer.returncode == 0, longer.stderr
    assert [r["epoch"] for r in metric_columns(run)] == ["1", "2", "3"]
    assert '"epochs": 3' in (run / "config.json").read_text()


def test_resume_refuses_unsafe_changes(data_workspace: Workspace) -> None:
    ws = data_workspace
    assert ws.run("--experiment_id=mnist", *TINY).returncode == 0
    result = ws.run("resume", str(ws.last_run()), "--lr=0.5", "--hidden_sizes=[8]")
    assert result.returncode == 2
    assert "cannot change on resume: --hidden_sizes: was [128], now [8]" in result.stderr
    assert "cannot change on resume: --lr: was 0.001, now 0.5" in result.stderr


def test_resume_errors_are_clear(data_workspace: Workspace, tmp_path: Path) -> None:
    ws = data_workspace
    not_a_run = ws.run("resume", str(tmp_path))
    assert not_a_run.returncode == 2 and "not a run directory" in not_a_run.stderr
    assert ws.run("--experiment_id=mnist", "--save_checkpoints=false", *TINY).returncode == 0
    no_ckpt = ws.run("resume", str(ws.last_run()))
    assert no_ckpt.returncode == 1 and "no checkpoints/last.pt" in no_ckpt.stderr
    assert ws.run("--experiment_id=mnist", *TINY).returncode == 0
    last = ws.last_run() / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    corrupt = ws.run("resume", str(ws.last_run()))
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
