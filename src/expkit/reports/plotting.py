"""history.png: loss and metric curves per epoch, train dashed and val solid.

Drawn by a child process (PlotWorker) when one can start: matplotlib's import (~0.75 s) and
each draw (~0.3 s) then happen beside the training, on another core, not in the run's own
thread; a thread cannot do this (it holds the GIL the training loop needs). In the run itself
when the child cannot start or dies.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from expkit.utils.files import atomic_write

WORKER_TAG = "expkit-plot-worker"  # in the child's command line: `python -c ... TAG PARENT_PID`

_SPLITS = ("train", "val")


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """Base names of the metrics logged per split (loss first), e.g. ["loss", "acc"]."""
    names: list[str] = []
    for key in rows[0] if rows else {}:
        split, _, base = key.partition("_")
        if split in _SPLITS and base and base not in names:
            names.append(base)
    return sorted(names, key=lambda n: (n != "loss", n))


def plot_history(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Draw one panel per metric (train vs val over epochs) and write the PNG atomically."""
    png = _draw(rows, title)
    atomic_write(path, lambda f: f.write(png))


def _draw(rows: list[dict[str, Any]], title: str) -> bytes:
    """The PNG of the history plot."""
    from matplotlib.figure import Figure  # imported here: ~0.75 s, only where plots are drawn
    from matplotlib.ticker import MaxNLocator

    names = metric_names(rows)
    fig = Figure(figsize=(5 * max(len(names), 1), 4), dpi=100)
    x_name = "step" if "step" in rows[0] else "epoch"  # a step-based run is drawn by step
    epochs = [row[x_name] for row in rows]
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, max(len(names), 1), i + 1)
        for split, style in zip(_SPLITS, ("--", "-"), strict=True):
            key = f"{split}_{name}"
            if key in rows[0]:
                ax.plot(epochs, [row[key] for row in rows], style, marker="o", markersize=3,
                        label=split)
        ax.set_xlabel(x_name)
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def serve(requests: IO[str] | None = None, replies: IO[str] | None = None) -> None:
    """The plot worker's loop: import matplotlib and draw once (warm), then for each request
    line {"rows", "path", "title"} draw history.png and answer {"seconds", "error"}; exit on an
    empty line or at EOF.

    Signals are the parent's business: a Ctrl-C or SIGTERM stops the run, which then asks for
    its final plot; the worker ends when the parent closes the pipe (or dies).
    """
    requests, replies = requests or sys.stdin, replies or sys.stdout
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(Exception):  # each request will say what is wrong
        _draw([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0}], "warm")  # import, fonts, caches
    for line in requests:
        if not line.strip():  # the run's goodbye: processes forked since (DataLoader workers)
            break             # hold the pipe open too, so EOF alone may never come
        started = time.process_time()
        error = None
        try:
            request = json.loads(line)
            plot_history(request["rows"], Path(request["path"]), request["title"])
        except Exception as e:  # reported to the run, which says it once
            error = f"{type(e).__name__}: {e}"
        replies.write(json.dumps({"seconds": time.process_time() - started, "error": error}) + "\n")
        replies.flush()


class PlotWorker:
    """A child process that draws history.png on request, one request at a time."""

    def __init__(self) -> None:
        src = str(Path(__file__).resolve().parents[1])
        code = (f"import sys, os; sys.path.insert(0, {src!r}); from expkit.reports.plotting import serve; "
                "serve(); os._exit(0)")  # everything is written: skip the interpreter's teardown
        self.proc = subprocess.Popen([sys.executable, "-c", code, WORKER_TAG, str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.pending = False  # a request sent, its reply not read yet

    def collect(self) -> tuple[float, str | None] | None:
        """(seconds, error) of the request sent last, waiting for it; None if the worker died
        before answering. (0, None) when nothing is pending."""
        if not self.pending:
            return 0.0, None
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.pending = False
        try:
            reply = json.loads(line)
            return float(reply["seconds"]), reply["error"]
        except (ValueError, KeyError, TypeError):
            return None

    def submit(self, rows: list[dict[str, Any]], path: Path, title: str) -> bool:
        """Send one draw request (after the previous one is answered); False if the worker is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"rows": rows, "path": str(path), "title": title}) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # a broken pipe: the worker died
            return False
        self.pending = True
        return True

    def close(self) -> None:
        """End the worker: say goodbye, close its input (it finishes any draw first), wait for it."""
        with contextlib.suppress(OSError, ValueError):  # already gone
            if self.proc.stdin is not None:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
