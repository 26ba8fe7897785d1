"""`expkit repeat --seeds=N [--workers=K] [--name=GROUP] --experiment_id=ID FLAGS`: the same
setting trained with N seeds, each an ordinary run directory that records its group.

    expkit repeat --seeds=3 --workers=3 --experiment_id=mnist --dataset=fashion_mnist --lr=1e-3

The seeds are drawn once and kept in results/repeats/<group>/repeat.json (or given as a list,
`--seeds=0,1,2`); the group's name defaults to the experiment id and a hash of the validated
arguments, so the same command names the same group. Re-running it fills in what is missing:
finished seeds are kept, a killed or stopped seed resumes from its checkpoint, a failed one (or
one that left no checkpoint) starts again, a running one is left alone. At the end: the
group's table (mean ± std and the 95% interval of each metric over its seeds).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from expkit.config.registry import Registry
from expkit.errors import ExpkitError, UsageError
from expkit.rundir.dirs import now, safe_name, shown_status
from expkit.rundir.groups import NOT_SETTINGS, group_runs
from expkit.rundir.results import Run, group_members
from expkit.rundir.values import flatten
from expkit.utils.files import atomic_write_json

FOLDER = "repeats"  # results/repeats/<group>/repeat.json
MAX_SEEDS = 1000


def parse_seeds(text: str) -> int | list[int]:
    """`--seeds=N` (draw N seeds) or `--seeds=0,1,2` / `[0,1,2]` (these seeds)."""
    body = text.strip().removeprefix("[").removesuffix("]")
    try:
        if "," in text or text.strip().startswith("["):
            seeds = [int(part) for part in body.split(",") if part.strip()]
            if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
                raise ValueError
            return seeds
        count = int(body)
    except ValueError:
        raise UsageError(f"--seeds: got {text!r}; expected a count (--seeds=3) or distinct "
                         "non-negative seeds (--seeds=0,1,2)") from None
    if not 1 <= count <= MAX_SEEDS:
        raise UsageError(f"--seeds: got {count}; expected 1 to {MAX_SEEDS} seeds")
    return count


def group_name(args: Any) -> str:
    """`<experiment_id>-<hash>`: the hash of every validated argument but the seed (and those
    that only say how a run is recorded), so that one setting always names one group."""
    flat = {k: v for k, v in flatten(args.model_dump(mode="json")).items()
            if k.rsplit(".", 1)[-1] not in NOT_SETTINGS}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
    return f"{args.experiment_id}-{digest[:8]}"


def _group_seeds(folder: Path, name: str, argv: list[str], wanted: int | list[int],
                 experiment_id: str, setting: str) -> list[int]:
    """The group's seeds: those repeat.json recorded (drawing more when N grows), or the given
    list; repeat.json is written before any run starts. A group named for other arguments
    (`setting`: the hash of group_name) is refused: one group holds one setting."""
    record_file = folder / "repeat.json"
    record: dict[str, Any] = {}
    if record_file.is_file():
        try:
            record = json.loads(record_file.read_text())
        except ValueError:
            raise ExpkitError(f"{record_file}: unreadable; delete it to start the group afresh") from None
    if record.get("setting", setting) != setting:
        raise UsageError(f"--name {name}: that group was trained with other arguments "
                         f"({' '.join(record.get('argv') or [])}); choose another --name")
    seeds: list[int] = list(record.get("seeds") or [])
    if isinstance(wanted, list):
        seeds = wanted
    else:
        while len(seeds) < wanted:
            seed = secrets.randbelow(2**31)
            if seed not in seeds:
                seeds.append(seed)
        seeds = seeds[:wanted] if wanted < len(seeds) else seeds
    kept = [*seeds, *(s for s in record.get("seeds") or [] if s not in seeds)]  # none forgotten
    atomic_write_json(record_file, {"name": name, "experiment_id": experiment_id, "argv": argv,
                                    "setting": setting, "seeds": kept,
                                    "created": record.get("created") or now()})
    return seeds


def plan(seeds: list[int], existing: dict[int, Run]) -> tuple[list[dict[str, Any]], list[str]]:
    """What each seed needs: nothing (finished, or running elsewhere), a resume, or a fresh
    run; with one line per seed that is left alone or resumed."""
    tasks, notes = [], []
    for seed in seeds:
        run = existing.get(seed)
        status = shown_status(run.record, run.path) if run else None
        if status == "finished":
            continue
        if status == "running" and run is not None:  # alive: shown_status checked its pid
            notes.append(f"seed {seed}: still running in {run.path} (pid {run.record.get('pid')}); "
                         "left alone")
            continue
        if run is not None and (run.path / "checkpoints" / "last.pt").is_file() and status != "failed":
            notes.append(f"seed {seed}: {status} in {run.path}; resuming it")
            tasks.append({"seed": seed, "resume": str(run.path)})
        else:
            tasks.append({"seed": seed})
    return tasks, notes


def run_repeat(args: Any, sources: dict[str, str], argv: list[str], wanted: int | list[int],
               workers: int, name: str | None, registry: Registry, registry_module: str | None,
               prog: str) -> int:
    """Train the missing seeds of the group (K local worker processes, or this one), then print
    its table; exit code 0 when every seed has finished."""
    from expkit.config.machine import load_machine_config
    from expkit.reports.tables import footnote, group_table, summary_metrics

    setting = group_name(args)
    name = name or setting
    if safe_name(name) != name:
        raise UsageError(f"--name: got {name!r}; use letters, digits, '-', '_', '.' (it names a folder)")
    machine = load_machine_config(announce=print)
    folder = machine.results_dir / FOLDER / name
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        seeds = _group_seeds(folder, name, argv, wanted, args.experiment_id, setting)
    except UsageError:
        if created:
            folder.rmdir()
        raise
    existing = group_members(machine.results_dir, args.experiment_id, name)
    tasks, notes = plan(seeds, existing)
    print(f"group {name}: {len(seeds) - len(tasks)}/{len(seeds)} seeds done; "
          f"{len(tasks)} to run" + (f" on {min(workers, len(tasks))} workers" if tasks else ""),
          flush=True)
    for note in notes:
        print(note, flush=True)
    payload = {"registry": registry_module, "prog": prog, "argv": argv, "group": name,
               "config": args.model_dump(mode="json"), "sources": sources}
    if workers <= 1 or len(tasks) <= 1:
        from expkit.repeat.worker import run_tasks

        code = run_tasks(tasks, payload, registry, quiet=False)
    else:
        code = _run_workers(tasks, payload, workers)
    done = group_members(machine.results_dir, args.experiment_id, name)
    group = [done[s] for s in seeds if s in done]
    finished = [r for r in group if r.status == "finished"]
    if finished:
        groups = group_runs(finished, by=[])
        print(group_table(groups, summary_metrics(finished)))
        print(footnote())
    if len(finished) < len(seeds):
        print(f"{len(seeds) - len(finished)} of {len(seeds)} seeds not finished; run the same "
              "command again to fill them in", flush=True)
        return code or 1
    return code


def _run_workers(tasks: list[dict[str, Any]], payload: dict[str, Any], workers: int) -> int:
    """Share the tasks among `workers` processes (`python -m expkit.repeat.worker`); wait."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    shares = [tasks[k::workers] for k in range(workers) if tasks[k::workers]]
    procs = [subprocess.Popen([sys.executable, "-m", "expkit.repeat.worker",
                               json.dumps({**payload, "tasks": share})], env=env,
                              stdout=subprocess.PIPE, text=True) for share in shares]
    relays = [threading.Thread(target=_relay, args=(p.stdout,), daemon=True) for p in procs]
    for relay in relays:
        relay.start()
    codes = [p.wait() for p in procs]
    for relay in relays:
        relay.join()
    return max(codes, default=0)


def _relay(stream: IO[str] | None) -> None:
    """A worker's lines onto this process's stdout, whole lines at a time."""
    for line in stream or []:
        print(line, end="", flush=True)
