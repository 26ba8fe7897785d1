"""`expkit list`: one row per run, newest first, from the summary cache (expkit.rundir.summaries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from expkit.rundir.dirs import job_label, resumable, safe_name, start_order
from expkit.rundir.results import all_runs, experiment_runs
from expkit.utils.invocation import command


def list_runs(results_dir: Path, experiment_id: str | None = None,
              status: str | None = None) -> list[dict[str, Any]]:
    """One row per run directory under `results_dir`, newest first, from run.json and metrics.json."""
    from expkit.rundir.jobqueue import one_queue_snapshot

    with one_queue_snapshot():
        rows = _rows(results_dir, experiment_id, status)
    return sorted(rows, key=lambda r: r["order"], reverse=True)


def _rows(results_dir: Path, experiment_id: str | None, status: str | None) -> list[dict[str, Any]]:
    own = Path(results_dir) / safe_name(experiment_id) if experiment_id else None
    rows = []
    for run in experiment_runs(own) if own is not None and own.is_dir() else all_runs(results_dir):
        record = run.record
        if experiment_id and record.get("experiment_id") != experiment_id:
            continue
        shown = run.status
        if status and shown != status:
            continue
        epochs, best = run.progress
        dataset = run.config.get("dataset")
        rows.append({"experiment": record.get("experiment_id", "?"), "run": run.id,
                     "dataset": str(dataset.get("name", "")) if isinstance(dataset, dict) else "",
                     "started": record.get("started") or "", "status": shown,
                     "epochs": epochs, "best": best,
                     "job": job_label(record), "path": str(run.path),
                     "order": start_order(record, run.path),
                     "resumable": resumable(run.path, shown)})
    return rows


def runs_table(rows: list[dict[str, Any]]) -> str:
    """The rows of `list_runs` as an aligned text table."""
    if not rows:
        return "no runs found"
    columns = ["experiment", "dataset", "run", "started", "status", "epochs", "best"]
    if any(r["job"] for r in rows):
        columns.insert(5, "job")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    lines += [f"resume {r['run']} ({r['status']}, {r['epochs'] or 0} epochs done) with: "
              f"{command('resume', r['path'])}" for r in rows if r.get("resumable")]
    return "\n".join(line.rstrip() for line in lines)
