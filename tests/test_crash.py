"""Crashes at any moment: SIGKILL at random times (checkpoint writes included), then resume,
equals an uninterrupted run bit for bit; runs started together never share a directory."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, Workspace, write_idx_set
from test_resume import assert_same_training

ARGS = ("--experiment_id=mnist", "--epochs=5", "--seed=11", "--hidden_sizes=[128]",
        "--dropout=0.1", "--deterministic=true", "--use_cuda=false")
KILLS = 20
PER_RUN = 4
# every fsync sleeps 100 ms in these runs (tests/slow_writes/sitecustomize.py): writes take most
# of the run's time, so random kills land inside checkpoint writes as well as inside steps
SLOW_WRITES = {"PYTHONPATH": str(Path(__file__).parent / "slow_writes"),
               "EXPKIT_TEST_FSYNC_DELAY": "0.1"}


def start(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=ws.root,
                            env={**ws.env, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_exact(workspace: Workspace) -> None:
    """KILLS SIGKILLs in all, spread over a few runs: a run is killed, its resume is killed too,
    and so on (up to PER_RUN kills each); the last resume finishes. Each run must end equal,
    bit for bit, to an uninterrupted run."""
    ws = workspace
    write_idx_set(ws.cache / "mnist", n_train=2000, n_test=200)
    reference_run = ws.cli(*ARGS, env=SLOW_WRITES)
    assert reference_run.returncode == 0, reference_run.stderr
    reference = ws.last_run()
    rng = random.Random(2026)
    kills = in_write = runs = 0
    while kills < KILLS:
        runs += 1
        known = set(ws.run_dirs())
        proc = start(ws, *ARGS, env=SLOW_WRITES)
        run_dir = _next_checkpoint(ws, proc, known, None)
        for _ in range(PER_RUN):
            # a random moment within about one epoch after a checkpoint: a step or a write
            time.sleep(rng.uniform(0.0, 0.8))
            proc.send_signal(signal.SIGKILL)
            if proc.wait(timeout=60) != -signal.SIGKILL:
                break  # it had finished
            kills += 1
            in_write += bool(list((run_dir / "checkpoints").glob(".*.tmp")))
            if kills == KILLS:
                break
            seen = (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns
            proc = start(ws, "resume", str(run_dir), env=SLOW_WRITES)  # and kill that one too
            if _next_checkpoint(ws, proc, known, seen) is None:
                break  # the resume finished without a new checkpoint to wait for
        resumed = ws.cli("resume", str(run_dir))
        assert resumed.returncode == 0, f"run {runs}: {resumed.stderr}"
        assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
        assert_same_training(reference, run_dir)
        assert not list((run_dir / "checkpoints").glob(".*.tmp")), "the half-written file is cleared"
    assert in_write >= 1, "no kill landed inside a checkpoint write; make writes slower"
    print(f"{kills} SIGKILLs over {runs} runs, {in_write} inside a file write: every resume "
          "succeeded and equals the uninterrupted run")


def _next_checkpoint(ws: Workspace, proc: subprocess.Popen[bytes], known: set[Path],
                     seen: int | None) -> Path | None:
    """The run's directory once it has a last.pt newer than `seen` (None: any last.pt);
    None if the process ended first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = [r for r in ws.run_dirs() if r not in known]
        last = new[0] / "checkpoints" / "last.pt" if new else None
        if last is not None and last.is_file() and (seen is None or last.stat().st_mtime_ns != seen):
            return new[0]
        if proc.poll() is not None:
            assert seen is not None, "the run ended before its first checkpoint"
            return None
        time.sleep(0.005)
    raise AssertionError("no checkpoint within 120 s")


def test_runs_started_together_get_their_own_directories(data_workspace: Workspace) -> None:
    ws = data_workspace
    args = ("--experiment_id=mnist", "--epochs=1", "--max_train_samples=100", "--seed=0")
    ws.cli(*args)  # config.yaml exists before the race
    before = set(ws.run_dirs())
    procs = [start(ws, *args) for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    new = set(ws.run_dirs()) - before
    assert len(new) == 4
    started = {json.loads((r / "run.json").read_text())["started"] for r in new}
    assert len(started) <= 2, "they did start within the same second or two"
    for run in new:
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert (run / "checkpoints" / "last.pt").is_file()
    assert len({Path(r).name for r in new}) == 4
