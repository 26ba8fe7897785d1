"""What the SLURM queue says of a run's job, for `expkit list`, index.html and `expkit.runs()`:
a run waiting in the queue shows as `queued` (before its first start) or `requeued`. Light on
purpose (no pydantic, no torch): listings import it."""

from __future__ import annotations

import contextlib
import contextvars
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

#: None: no snapshot; False: inside `one_queue_snapshot`, not asked yet; a dict: the answer
_SNAPSHOT: contextvars.ContextVar[dict[str, str] | bool | None] = \
    contextvars.ContextVar("expkit_squeue_snapshot", default=None)


@contextlib.contextmanager
def one_queue_snapshot() -> Iterator[None]:
    """Within the block, squeue is asked at most once (a listing of many runs)."""
    token = _SNAPSHOT.set(False)
    try:
        yield
    finally:
        _SNAPSHOT.reset(token)


def queue_states() -> dict[str, str]:
    """Job id -> state (PENDING, RUNNING, ...) of the jobs SLURM knows now; {} without SLURM."""
    snapshot = _SNAPSHOT.get()
    if isinstance(snapshot, dict):
        return dict(snapshot)
    states: dict[str, str] = {}
    if shutil.which("squeue") is not None:
        try:
            done = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True,
                                  timeout=20)
            states = dict(line.split(None, 1) for line in done.stdout.splitlines() if " " in line)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if snapshot is False:
        _SNAPSHOT.set(states)
    return states


def job_status(record: dict[str, Any], status: str) -> str:
    """A run's status with its SLURM job considered: waiting in the queue after a start is
    `requeued` (before any, `queued`), running is `running`."""
    job = (record.get("slurm") or {}).get("job_id")
    if not job or status == "finished":
        return status
    state = queue_states().get(str(job))
    if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING"):
        return "requeued" if record["slurm"].get("attempts") else "queued"
    if state == "RUNNING" and status in ("stopped", "killed", "requeued", "queued"):
        return "running"
    return status
