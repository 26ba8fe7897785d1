"""Run directories written as expkit writes them, for tests of the readers (compare, list,
expkit.runs(), index.html) that need many runs or runs in a given state without training."""

from __future__ import annotations

import csv
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a Python process that has ended (what a SIGKILLed run leaves in run.json)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def write_run(results: Path, name: str, lr: float, seed: int, test_acc: float | None,
              started: str = "2026-12-01T10:00:00+00:00", start_ns: int | None = None,
              epochs_done: int = 3, pid: int | None = None) -> Path:
    """A mnist run directory as a real run leaves it: finished (with `test_acc`), or killed
    after `epochs_done` epochs (`test_acc=None`: run.json says running, its process is gone,
    no metrics.json), or still running (`test_acc=None` and the `pid` of a live process)."""
    run = results / "mnist" / name
    run.mkdir(parents=True)
    config = {"experiment_id": "mnist", "seed": seed, "epochs": 3,
              "optimizer": {"name": "adam", "lr": lr}, "model": {"hidden_sizes": [16]}}
    (run / "config.json").write_text(json.dumps(config))
    record = {"experiment_id": "mnist", "started": started, "host": HOST,
              "status": "finished" if test_acc is not None else "running",
              **({"start_ns": start_ns} if start_ns is not None else {}),
              **({"pid": pid or dead_pid()} if test_acc is None else {})}
    (run / "run.json").write_text(json.dumps(record))
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_acc": 0.5 + 0.1 * e + lr}
            for e in range(1, epochs_done + 1)]
    with (run / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if test_acc is not None:
        (run / "metrics.json").write_text(json.dumps({
            "monitor": "val_acc", "mode": "max", "directions": {"acc": "max", "loss": "min"},
            "epochs_run": epochs_done, "best_epoch": epochs_done,
            "final": rows[-1], "best": rows[-1], "test": {"test_acc": test_acc}}))
    return run


def index_rows(results: Path) -> dict[str, dict]:
    """results/index.html's rows (the data its script draws) by run id: status, epochs,
    best (so far), resume (the command), job, metrics and args by name."""
    page = (results / "index.html").read_text()
    found = re.search(r'<script type="application/json" id="runs-data">(.*?)</script>', page, re.S)
    assert found, "index.html holds its rows as data"
    data = json.loads(found.group(1))  # "<\\/" in it is JSON's escape of "/"
    rows = {}
    for e in data["experiments"]:
        for i, rid, folder, status, started, epochs, best, resume, job, metrics, args in e["rows"]:
            rows[rid] = {"index": i, "folder": folder, "status": status, "started": started,
                         "epochs": epochs, "best": best, "resume": resume, "job": job,
                         "metrics": dict(zip(e["metrics"], metrics, strict=True)),
                         "args": dict(zip(e["args"], args, strict=True))}
    return rows
