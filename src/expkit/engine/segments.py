"""What run.json says of a run's segments (its start and each resume): how many processes ran
each one, and, after a resume, what the run finally is: the command that re-runs it with the
arguments the resume changed (--epochs=5), and the process group of its last segment."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from expkit.config.args import flag_table
from expkit.engine.experiment import ExperimentArgs
from expkit.rundir.values import flatten
from expkit.training.distributed import Dist
from expkit.utils.invocation import pinned


def segment(at: str, dist: Dist) -> dict[str, Any]:
    """One segment of a run as run.json's `segments` lists it: when it started, and on how
    many processes (with the backend, under torchrun)."""
    return {"at": at, "processes": dist.world_size, **({"backend": dist.backend} if dist.enabled else {})}


def as_flag(value: Any) -> str:
    """A value written as a flag's value, exactly (true/false, auto, lists and dicts as JSON)."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value, separators=(",", ":"))
    return str(value)


def resumed_fields(args: ExperimentArgs, run_dir: Path, record: dict[str, Any], dist: Dist,
                   at: str) -> dict[str, Any]:
    """run.json's fields that a resume changes: one more segment, the last segment's process
    group, and the command with each argument the resume changed (config.json before it is
    rewritten, against the resumed args) written out."""
    old = flatten(json.loads((run_dir / "config.json").read_text()))
    new = flatten(args.model_dump(mode="json"))
    names = {".".join(f.path): f.name for f in flag_table(type(args)).values()}
    changed = {names.get(key, key): as_flag(value) for key, value in new.items()
               if key in old and old[key] != value}
    fields: dict[str, Any] = {
        "segments": [*record.get("segments", []), segment(at, dist)],
        "distributed": dist.record() if dist.enabled else None}
    if changed and record.get("command"):
        fields["command"] = shlex.join(pinned(shlex.split(str(record["command"])), changed))
    return fields
