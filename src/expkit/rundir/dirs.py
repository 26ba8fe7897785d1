"""Run directories: results/<experiment_id>/<YYYYmmdd-HHMMSS>-<short id>/, created exclusively."""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError
from expkit.utils.files import atomic_write_json

#: every status a run can show (run.json's, or what `shown_status` makes of it)
STATUSES = ("running", "finished", "failed", "stopped", "killed", "queued", "requeued")

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(text: str) -> str:
    """`text` usable as one path component: no separators, no leading dots."""
    return _SAFE.sub("_", text).lstrip(".") or "_"


def create_run_dir(results_dir: Path, experiment_id: str) -> Path:
    """A new, empty run directory; two runs started in the same second never share one."""
    parent = Path(results_dir) / safe_name(experiment_id)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExpkitError(f"cannot create the results folder {parent}: {e.strerror}; "
                          "change results_dir in config.yaml or EXPKIT_RESULTS_DIR") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        run_dir = parent / f"{stamp}-{secrets.token_hex(3)}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise ExpkitError(f"cannot create run directory {run_dir}: {e.strerror}") from None
        return run_dir
    raise ExpkitError(f"could not find a free run directory name under {parent}")


class RunRecord:
    """run.json: what ran and how it ended (status running/finished/failed/stopped), updated in place."""

    def __init__(self, run_dir: Path, write: bool = True) -> None:
        self.path = Path(run_dir) / "run.json"
        self.write = write  # False on ranks other than 0: they read, rank 0 writes

    def read(self) -> dict[str, Any]:
        """The record so far ({} if none)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update(self, **fields: Any) -> None:
        """Merge `fields` into run.json (written atomically)."""
        if self.write:
            atomic_write_json(self.path, {**self.read(), **fields})


def alive_fields() -> dict[str, Any]:
    """Who runs the run, for run.json: `expkit list` tells a live run from a killed one by them."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": now()}


#: a run on another host whose heartbeat is older than this (and than 3 of its epochs) is dead
STALE_SECONDS = 600


def shown_status(record: dict[str, Any], run_dir: Path) -> str:
    """The status to show: run.json's, except that a `running` run whose process is gone is
    `killed` (same host: its pid is gone; another host: its heartbeat is stale). Such a run
    resumes like any other."""
    status = str(record.get("status", "?"))
    if record.get("slurm"):  # a SLURM job's run: waiting in the queue is queued or requeued
        from expkit.rundir.jobqueue import job_status

        status = job_status(record, status)
    if status != "running" or "pid" not in record:
        return status
    if record.get("host") == socket.gethostname():
        return "running" if process_alive(int(record["pid"])) else "killed"
    try:
        age = time.time() - datetime.fromisoformat(str(record.get("heartbeat"))).timestamp()
    except ValueError:
        return status
    return "killed" if age > max(STALE_SECONDS, 3 * _longest_epoch(run_dir)) else "running"


def process_alive(pid: int) -> bool:
    """Whether a Python process with this pid runs here (a pid reused by another program is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid


def _longest_epoch(run_dir: Path) -> float:
    try:
        with (run_dir / "history.csv").open() as f:
            return max((float(row.get("epoch_time") or 0) for row in csv.DictReader(f)), default=0.0)
    except (OSError, ValueError):
        return 0.0


def now() -> str:
    """The local time with offset, ISO 8601, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def start_order(record: dict[str, Any], run_dir: Path) -> tuple[float, str]:
    """A run's place in "oldest first" order: when it started, to the nanosecond (run.json's
    `start_ns`; runs recorded before it by `started`, to the second), then its folder name.
    Two runs started within one second sort by when they started, never by their random ids."""
    precise = record.get("start_ns")
    if isinstance(precise, int):
        return precise / 1e9, run_dir.name
    try:
        return datetime.fromisoformat(str(record.get("started"))).timestamp(), run_dir.name
    except ValueError:
        return 0.0, run_dir.name


#: statuses of a run that `expkit resume` continues (from its checkpoints/last.pt)
RESUMABLE = ("killed", "stopped", "failed")


def resumable(run_dir: Path, status: str) -> bool:
    """Whether `expkit resume` continues this run: it did not finish and left a checkpoint."""
    return status in RESUMABLE and (run_dir / "checkpoints" / "last.pt").is_file()


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object ({} when it is missing, unreadable or not an object)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def job_label(record: dict[str, Any]) -> str:
    """A SLURM job's id and how many times it started ("812, 2 attempts"); "" for other runs."""
    slurm = record.get("slurm") or {}
    if not slurm.get("job_id"):
        return ""
    n = len(slurm.get("attempts") or [])
    return f"{slurm['job_id']}, {n} attempt{'s' if n != 1 else ''}"
