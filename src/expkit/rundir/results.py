"""Runs as plain Python objects, for notebooks and the compare/report commands.

    import expkit
    runs = expkit.runs("results", experiment_id="mnist", status="finished")
    runs.filter(lr=1e-3)                 # by any config value (flag name or dotted path)
    df = runs.to_pandas()                # one row per run, when pandas is installed

Nothing here imports torch: reading results is fast.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError, UsageError
from expkit.rundir.dirs import shown_status


def flatten(config: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested config -> {"optimizer.lr": 0.001, ...} (lists stay values; `sep` joins the keys)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}{sep}", sep)
        else:
            out[f"{prefix}{key}"] = value
    return out


def as_typed(value: Any, none: str = "auto") -> str:
    """A config value as it is typed on the command line: true/false, [64,32], auto."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def flag_of(key: str, record: dict[str, Any] | None = None) -> str:
    """The command-line flag of a dotted config key (`scheduler.name` is --scheduler)."""
    flags = (record or {}).get("flags") or {}
    if key in flags:
        return str(flags[key])
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """history.csv of a run as one dict per epoch ([] when there is none yet)."""
    csv_file = Path(run_dir) / "history.csv"
    if not csv_file.is_file():
        return []
    with csv_file.open() as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Run:
    """One run directory: its config, record (run.json), summary (metrics.json) and history."""

    path: Path
    config: dict[str, Any]
    record: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(repr=False)

    @property
    def id(self) -> str:
        """The run's folder name, e.g. 20261128-113502-71811a."""
        return self.path.name

    @property
    def experiment_id(self) -> str:
        """The experiment that made it."""
        return str(self.config.get("experiment_id") or self.record.get("experiment_id", "?"))

    @property
    def status(self) -> str:
        """running, finished, failed or stopped."""
        return shown_status(self.record, self.path)

    @property
    def flat_config(self) -> dict[str, Any]:
        """The config with dotted keys."""
        return flatten(self.config)

    def get(self, key: str, default: Any = None) -> Any:
        """A config value by dotted path ("optimizer.lr") or by its last part ("lr")."""
        flat = self.flat_config
        if key in flat:
            return flat[key]
        matches = [v for k, v in flat.items() if k.rsplit(".", 1)[-1] == key]
        return matches[0] if len(matches) == 1 else default

    def summary(self) -> dict[str, float]:
        """Final, best (monitored epoch) and test values: final_val_acc, best_val_acc, test_acc, ..."""
        out: dict[str, float] = {}
        final = self.metrics.get("final") or (self.history[-1] if self.history else {})
        for key, value in final.items():
            if key.startswith(("train_", "val_")) and isinstance(value, (int, float)):
                out[f"final_{key}"] = float(value)
        for key, value in (self.metrics.get("best") or {}).items():
            if key.startswith(("train_", "val_")) and isinstance(value, (int, float)):
                out[f"best_{key}"] = float(value)
        for key, value in (self.metrics.get("test") or {}).items():
            out[key] = float(value)
        return out


def read_run(path: str | Path) -> Run:
    """A run directory as a Run; a UsageError naming the folder when it is not one."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise UsageError(f"{path}: no such folder; give a run directory like "
                         "results/<experiment_id>/<time>-<id>")
    config = _json(run_dir / "config.json")
    record = _json(run_dir / "run.json")
    if not config and not record:
        raise UsageError(f"{path}: not a run directory (no config.json or run.json); give a folder "
                         "like results/<experiment_id>/<time>-<id>")
    return Run(run_dir, config, record, _json(run_dir / "metrics.json"), read_history(run_dir))


class Runs(list[Run]):
    """A list of runs with filters and a pandas view."""

    def filter(self, status: str | None = None, experiment_id: str | None = None,
               **config: Any) -> Runs:
        """The runs whose status, experiment and config values (by flag name or dotted path) match."""
        missing = object()
        return Runs(r for r in self
                    if (status is None or r.status == status)
                    and (experiment_id is None or r.experiment_id == experiment_id)
                    and all(r.get(k, missing) == v for k, v in config.items()))

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per run: id, experiment, status, started, config values, summary metrics."""
        return [{"id": r.id, "experiment_id": r.experiment_id, "status": r.status,
                 "started": r.record.get("started"), "path": str(r.path),
                 **{k: v for k, v in r.flat_config.items() if k != "experiment_id"},
                 **r.summary()} for r in self]

    def to_pandas(self) -> Any:
        """A pandas DataFrame of `rows()` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ExpkitError("to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.rows())


def runs(results_dir: str | Path = "results", experiment_id: str | None = None,
         status: str | None = None, **config: Any) -> Runs:
    """Every run under `results_dir` (oldest first), optionally filtered like `Runs.filter`."""
    folder = Path(results_dir)
    found = Runs(read_run(p.parent) for p in sorted(folder.glob("*/*/run.json"))
                 if p.parent.parent.name != "sweeps")
    found.sort(key=lambda r: (str(r.record.get("started") or ""), r.id))
    return found.filter(status, experiment_id, **config)


ARTIFACTS = "artifacts"  # RUN_DIR/artifacts/NAME/EPOCH.txt|png (expkit.tracking.artifacts)


def read_artifacts(run_dir: Path) -> dict[str, list[Path]]:
    """Each artifact name of a run and its files, in evaluation order."""
    folder = Path(run_dir) / ARTIFACTS
    if not folder.is_dir():
        return {}
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [p for p in sub.iterdir() if p.suffix in (".txt", ".png") and p.stem.isdigit()]
        out[sub.name] = sorted(files, key=lambda p: int(p.stem))
    return out


def row_step(row: dict[str, float]) -> int:
    """The step a history row is logged at: its optimizer step in a step-based run, else its
    epoch (trackers' x axis, and what a resumed run checks it has already sent)."""
    return int(row["step"]) if "step" in row else int(row["epoch"])
