"""Crashes at any moment: SIGKILL at random times (checkpoint writes included), then resume,
equals an uninterrupted run bit for bit; runs started together never share a directory."""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Workspace, write_idx_set
from expkit import rundirs
from expkit.errors import ExpkitError
from expkit.rundirs import create_run_dir
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
    # the four live at once (each spends seconds importing torch before its directory exists);
    # the same-second name clash itself is tested deterministically below
    assert all(p.poll() is None for p in procs), "a run ended before the last one started"
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    new = set(ws.run_dirs()) - before
    assert len(new) == 4
    for run in new:
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert (run / "checkpoints" / "last.pt").is_file()
    assert len({Path(r).name for r in new}) == 4


def _create_many(results: str, barrier: Any, count: int) -> list[str]:
    barrier.wait()  # every process starts creating at the same moment
    return [str(create_run_dir(Path(results), "race")) for _ in range(count)]


def test_processes_creating_run_dirs_at_once_never_share_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(4) as pool:
        barrier = manager.Barrier(4)
        made = pool.starmap(_create_many, [(str(tmp_path), barrier, 50)] * 4)
    names = [name for part in made for name in part]
    assert len(names) == 200 and len(set(names)) == 200
    assert sorted(str(p) for p in (tmp_path / "race").iterdir()) == sorted(names)


def test_a_taken_name_is_skipped_and_endless_clashes_are_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs in the same second drawing the same suffix: the second takes the next draw."""
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261128-120000")
    draws = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(rundirs.secrets, "token_hex", lambda n: next(draws))
    first = create_run_dir(tmp_path, "exp")
    (first / "mine").write_text("kept")
    second = create_run_dir(tmp_path, "exp")
    assert (first.name, second.name) == ("20261128-120000-aaaaaa", "20261128-120000-bbbbbb")
    assert (first / "mine").read_text() == "kept" and not list(second.iterdir())

    monkeypatch.setattr(rundirs.secrets, "token_hex", lambda n: "aaaaaa")
    with pytest.raises(ExpkitError, match="could not find a free run directory name"):
        create_run_dir(tmp_path, "exp")
