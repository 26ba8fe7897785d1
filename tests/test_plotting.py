"""history.png is drawn by a child process: it ends with the run, a run outlives it, and a
killed run does not leave it behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, Workspace
from expkit.reports.plotting import WORKER_TAG

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ARGS = ("--experiment_id=mnist", "--seed=0", "--max_train_samples=300")


# run.py, and at its exit lines saying whether the training process imported matplotlib and
# the optional trackers (a run without their flags never imports them)
PROBE = ("import atexit, runpy, sys\n"
         "atexit.register(lambda: print('matplotlib imported:', 'matplotlib' in sys.modules))\n"
         "atexit.register(lambda: print('trackers imported:', sorted({'mlflow', 'wandb', "
         "'tensorboard'} & set(sys.modules))))\n"
         "sys.argv = sys.argv[1:]\n"
         "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def start(ws: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", PROBE, str(REPO / "run.py"), *ARGS, *args],
                            cwd=ws.root, env=ws.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def worker_of(run: subprocess.Popen[str], timeout: float = 60) -> int:
    """The pid of the run's plot worker (its command line names the run's pid), once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if WORKER_TAG.encode() in argv and str(run.pid).encode() in argv:
                return int(entry.name)
        assert run.poll() is None, "the run ended without a plot worker"
        time.sleep(0.01)
    raise AssertionError("no plot worker within the timeout")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


@pytest.mark.slow
def test_the_worker_draws_history_png_and_ends_with_the_run(data_workspace: Workspace) -> None:
    run = start(data_workspace, "--epochs=3")
    worker = worker_of(run)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert not alive(worker)
    png = data_workspace.last_run() / "history.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "warning" not in err
    assert "matplotlib imported: False" in out, "matplotlib stays out of the training process"
    assert "trackers imported: []" in out, "mlflow, wandb, tensorboard: only when switched on"


@pytest.mark.slow
def test_a_run_whose_worker_dies_draws_history_png_itself(data_workspace: Workspace) -> None:
    run = start(data_workspace, "--epochs=3")
    os.kill(worker_of(run), signal.SIGKILL)
    killed = time.time()
    out, err = run.communicate(timeout=300)
    assert "matplotlib imported: True" in out, "without its worker the run draws itself"
    assert run.returncode == 0, err
    png = data_workspace.last_run() / "history.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_mtime >= killed - 1  # drawn after the worker was gone
    assert "warning" not in err and "Traceback" not in err


def test_a_killed_run_leaves_no_worker_behind(data_workspace: Workspace) -> None:
    run = start(data_workspace, "--epochs=50")
    worker = worker_of(run)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker), "the plot worker outlived its run"


def test_the_worker_ends_at_close_while_forked_children_hold_its_pipe(tmp_path: Path) -> None:
    """DataLoader workers (a streamed dataset) are forked after the plot worker: they inherit
    its input pipe, so end-of-file never reaches it. close() says goodbye instead; without
    that, close() waits 60 s and kills the worker (exit code -9)."""
    from expkit.reports.plotting import PlotWorker

    worker = PlotWorker()
    child = os.fork()
    if child == 0:  # like a DataLoader worker: holds every inherited descriptor, lives on
        time.sleep(120)
        os._exit(0)
    try:
        assert worker.submit([{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9}],
                             tmp_path / "history.png", "t")
        reply = worker.collect()
        assert reply is not None and reply[1] is None, reply
        worker.close()
        assert worker.proc.returncode == 0, "the plot worker was killed instead of leaving"
        assert (tmp_path / "history.png").read_bytes()[:8] == PNG_MAGIC
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        worker.proc.kill()
