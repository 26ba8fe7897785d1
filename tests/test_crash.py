"""Crashes at any moment: SIGKILL at many moments (inside checkpoint writes, between a checkpoint
and its history row, mid-epoch), then resume, equals an uninterrupted run bit for bit; runs
started together never share a directory."""

from __future__ import annotations

import csv
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
from expkit.errors import ExpkitError
from expkit.rundir import dirs as rundirs
from expkit.rundir.dirs import create_run_dir
from expkit.rundir.results import read_run
from expkit.training.checkpoint import load_checkpoint
from runs import index_rows
from test_resume import assert_same_training

ARGS = ("--experiment_id=mnist", "--epochs=4", "--seed=11", "--hidden_sizes=[64]",
        "--dropout=0.1", "--deterministic=true", "--use_cuda=false")
KILLS = 20
PER_RUN = 10
HOOKS = str(Path(__file__).parent / "hooks")  # sitecustomize.py: kill at a chosen event


def start(ws: Workspace, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=ws.root, env=ws.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def at(moment: str) -> dict[str, str]:
    """The environment that makes a run kill itself (SIGKILL) at `moment` (see hooks/)."""
    return {"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": f"{moment}:KILL"}


KINDS = ["step", "write:last.pt", "write:history.csv", "write:best.pt", "write:run.json"]


def kill_moment(i: int, rng: random.Random, steps_per_epoch: int, fresh: bool) -> str:
    """The i-th moment to die at. The kinds take turns (a step; inside a checkpoint's write;
    between last.pt and history.csv of one epoch; inside run.json's write), the step drawn
    from `rng`. A fresh run dies only after its first last.pt (before that there is nothing
    to resume); a resume's first history.csv write is its restore, so it dies at the second."""
    kind = KINDS[i % len(KINDS)]
    if kind == "step":  # a resume: within its first epoch, so that chains of kills stay short
        return f"step:{rng.randint(1, steps_per_epoch) + (steps_per_epoch if fresh else 0)}"
    if kind == "write:run.json":
        return f"write:run.json:{2 if fresh else 1}"  # a run's end / a resume's start
    if kind == "write:best.pt":
        return "write:best.pt:1"  # epoch 1's best.pt: last.pt is on disk already
    return f"{kind}:2" if fresh or kind == "write:history.csv" else f"{kind}:1"


@pytest.mark.slow
def test_sigkill_at_many_moments_then_resume_is_exact(workspace: Workspace) -> None:
    """KILLS SIGKILLs at moments drawn from a fixed seed (a step, inside a checkpoint write,
    between a checkpoint and its history row, ...), spread over a few runs: a run is killed, its
    resume is killed too, and so on (up to PER_RUN kills each); the last resume finishes. Each
    run must end equal, bit for bit, to an uninterrupted run. The moments are events of the run
    itself (tests/hooks), so the same kills happen on a fast or a loaded machine."""
    ws = workspace
    write_idx_set(ws.cache / "mnist", n_train=700, n_test=100)
    reference_run = ws.run(*ARGS)
    assert reference_run.returncode == 0, reference_run.stderr
    reference = ws.last_run()
    steps_per_epoch = -(-630 // 64)  # 700 examples, 10% for validation, batch 64
    rng = random.Random(2026)
    kills: list[str] = []
    lagging = 0
    runs = 0
    while len(kills) < KILLS:
        runs += 1
        assert runs <= KILLS, f"too few kills landed: {kills}"
        known = set(ws.run_dirs())
        moment = kill_moment(len(kills), rng, steps_per_epoch, fresh=True)
        proc = ws.fork(*ARGS, env=at(moment))
        assert proc.returncode == -signal.SIGKILL, f"{moment}: {proc.returncode} {proc.stderr}"
        kills.append(moment)
        (run_dir,) = set(ws.run_dirs()) - known
        for _ in range(PER_RUN - 1):
            if len(kills) == KILLS:
                break
            lagging += _history_lags_checkpoint(run_dir)
            moment = kill_moment(len(kills), rng, steps_per_epoch, fresh=False)
            proc = ws.fork("resume", str(run_dir), env=at(moment))
            if proc.returncode == 0:
                break  # it finished before that moment came
            assert proc.returncode == -signal.SIGKILL, f"{moment}: {proc.returncode} {proc.stderr}"
            kills.append(moment)
        lagging += _history_lags_checkpoint(run_dir)
        resumed = ws.run("resume", str(run_dir))
        assert resumed.returncode == 0, f"run {runs}: {resumed.stderr}"
        assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
        assert_same_training(reference, run_dir)
        assert not list((run_dir / "checkpoints").glob(".*.tmp")), "the half-written file is cleared"
    kinds = {moment.rsplit(":", 1)[0] for moment in kills}
    assert {"step", "write:last.pt", "write:history.csv"} <= kinds, kills
    assert lagging >= 1, "no kill left history.csv behind last.pt; resume must be tested on one"
    print(f"{len(kills)} SIGKILLs over {runs} runs ({', '.join(sorted(kinds))}), {lagging} with "
          "history.csv behind last.pt: every resume succeeded and equals the uninterrupted run")


def _history_lags_checkpoint(run_dir: Path) -> bool:
    """Whether history.csv has fewer rows than last.pt's epochs (a kill between the two writes)."""
    history = run_dir / "history.csv"  # not written yet when epoch 1 died inside best.pt's write
    rows = len(history.read_text().splitlines()) - 1 if history.exists() else 0
    return rows < load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]


@pytest.mark.slow
def test_runs_started_together_get_their_own_directories(data_workspace: Workspace) -> None:
    ws = data_workspace
    args = ("--experiment_id=mnist", "--epochs=1", "--max_train_samples=100", "--seed=0")
    before = set(ws.run_dirs())
    # four runs at once, config.yaml not written yet; the same-second name clash itself is
    # tested deterministically below
    procs = [start(ws, *args) for _ in range(4)]
    try:
        assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    finally:
        for p in procs:
            p.kill()
    new = set(ws.run_dirs()) - before
    assert len(new) == 4
    for run in new:
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert (run / "checkpoints" / "last.pt").is_file()
    assert len({Path(r).name for r in new}) == 4


def _create_many(results: str, barrier: Any, count: int) -> list[str]:
    barrier.wait()  # every process starts creating at the same moment
    return [str(create_run_dir(Path(results), "race")) for _ in range(count)]


@pytest.mark.slow
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



def test_a_killed_run_shows_as_killed_and_resumes(data_workspace: Workspace) -> None:
    """run.json says `running` after a SIGKILL; list, index.html and expkit.runs() say `killed`
    (same host: the pid is gone; another host: the heartbeat is stale); resume finishes it."""
    ws = data_workspace
    args = ("--experiment_id=mnist", "--epochs=2", "--max_train_samples=200", "--seed=0")
    killed = ws.fork(*args, env=at("step:4"))  # 3 steps an epoch: dies in epoch 2
    assert killed.returncode == -signal.SIGKILL
    run = ws.last_run()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "running" and record["host"] and record["pid"] and record["heartbeat"]
    listing = ws.cli("list", entry="expkit")
    assert listing.returncode == 0 and "killed" in listing.stdout.splitlines()[1].split(), listing.stdout
    # what the run directory holds: the epochs done, the best so far, and how to go on
    [row] = list(csv.DictReader((run / "history.csv").open()))
    so_far = f"val_acc {float(row['val_acc']):.4f} so far"
    assert listing.stdout.splitlines()[1].split()[-6:] == ["killed", "1", *so_far.split()], listing.stdout
    resume_line = f"resume {run.name} (killed, 1 epochs done) with: "
    assert any(line.startswith(resume_line) and line.endswith(f"resume {run}")
               for line in listing.stdout.splitlines()), listing.stdout
    assert read_run(run).status == "killed"
    assert ws.run("report", "--index").returncode == 0
    row = index_rows(ws.results)[run.name]
    assert row["status"] == "killed" and row["epochs"] == 1, "the epochs done"
    assert row["best"] == so_far and row["resume"].endswith(f"resume {run}")

    elsewhere = {**record, "host": "another-host"}  # a live run elsewhere beats recently
    (run / "run.json").write_text(json.dumps({**elsewhere, "heartbeat": rundirs.now()}))
    assert read_run(run).status == "running"
    (run / "run.json").write_text(json.dumps({**elsewhere, "heartbeat": "2020-01-01T00:00:00+00:00"}))
    assert read_run(run).status == "killed"

    resumed = ws.run("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert read_run(run).status == "finished"
