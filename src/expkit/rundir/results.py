"""Runs as plain Python objects, for notebooks and the compare/report commands.

    import expkit
    runs = expkit.runs("results", experiment_id="mnist", status="finished")
    runs.filter(lr=1e-3)                 # by any config value (flag name or dotted path)
    df = runs.to_pandas()                # one row per run, when pandas is installed
    runs.groups()                        # the runs of each setting (all arguments but the seed)
    runs.aggregate()                     # per setting: n, each metric's mean, std, 95% interval

Nothing here imports torch: reading results is fast.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError, UsageError
from expkit.rundir import summaries
from expkit.rundir.dirs import read_json_object, safe_name, shown_status, start_order
from expkit.rundir.groups import Group, group_runs
from expkit.rundir.values import flatten

#: history columns and summary values that measure the machine, not the training: never compared
#: (a resumed or reproduced run trains the same numbers at its own speed)
WALL_CLOCK = ("_time", "_per_second", "_seconds")


def wall_clock(name: str) -> bool:
    """Whether a history column or summary value is a timing (epoch_time, data_time,
    samples_per_second, train_seconds) rather than a result."""
    return name.endswith(WALL_CLOCK)


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """history.csv of a run as one dict per epoch ([] when there is none yet)."""
    try:
        f = open(Path(run_dir) / "history.csv", newline="")  # noqa: SIM115 (closed below)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    with f:
        rows = csv.reader(f)
        header = next(rows, None)
        # a row cut short (a kill while it was written) keeps the values it has
        return [{k: float(v) for k, v in zip(header, row, strict=False) if v}
                for row in rows] if header else []


@dataclass(eq=False)
class Run:
    """One run directory: its config, record (run.json), summary (metrics.json) and history
    (history.csv, read when first asked for: a folder of many runs is listed without it)."""

    path: Path
    config: dict[str, Any]
    record: dict[str, Any]
    metrics: dict[str, Any]
    _history: list[dict[str, float]] | None = field(default=None, repr=False)
    #: what the summary cache keeps of the history: its last row and the run's progress
    _derived: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def history(self) -> list[dict[str, float]]:
        """history.csv as one dict per evaluation ([] before the first)."""
        if self._history is None:
            self._history = read_history(self.path)
        return self._history

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
        """running, finished, failed or stopped (killed, queued, requeued: see `expkit list`)."""
        return shown_status(self.record, self.path)

    @cached_property
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

    @property
    def derived(self) -> dict[str, Any]:
        """What the history says in brief: its `last` row and the run's `progress` (epochs run,
        the best so far), kept by the summary cache so that listing a run never reads it."""
        if self._derived is None:  # a finished run's metrics.json says it all: no history read
            done = bool(self.metrics.get("final"))
            self._derived = derive(self.config, self.metrics, [] if done else self.history)
        return self._derived

    @property
    def progress(self) -> tuple[int | str, str]:
        """(epochs run, "val_acc 0.9120"), "so far" while it has no metrics.json ("" unknown)."""
        epochs, best = self.derived["progress"]
        return epochs, best

    def summary(self) -> dict[str, float]:
        """Final, best (monitored epoch) and test values: final_val_acc, best_val_acc, test_acc, ..."""
        return dict(self._summary)

    @cached_property
    def _summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        final = self.metrics.get("final") or self.derived["last"] or {}
        for key, value in final.items():
            if key.startswith(("train_", "val_")) and isinstance(value, (int, float)):
                out[f"final_{key}"] = float(value)
        for key, value in (self.metrics.get("best") or {}).items():
            if key.startswith(("train_", "val_")) and isinstance(value, (int, float)):
                out[f"best_{key}"] = float(value)
        for key, value in (self.metrics.get("test") or {}).items():
            out[key] = float(value)
        return out


def derive(config: dict[str, Any], metrics: dict[str, Any],
           history: list[dict[str, float]]) -> dict[str, Any]:
    """A run's history in brief: its last row, and its progress (epochs run and the best value
    of the monitor: metrics.json's once it ended, else history's so far)."""
    return {"last": history[-1] if history else None,
            "progress": list(progress_of(config, metrics, history))}


def progress_of(config: dict[str, Any], metrics: dict[str, Any],
                history: list[dict[str, float]]) -> tuple[int | str, str]:
    """(epochs run, "val_acc 0.9120") of a run: metrics.json's once it ended, else what its
    history holds so far, the best marked "so far" (a killed run wrote no metrics.json, but its
    epochs and checkpoints are there). ("", "") when there is nothing yet."""
    monitor = metrics.get("monitor")
    best = (metrics.get("best") or {}).get(monitor) if monitor else None
    if metrics:
        return metrics.get("epochs_run", ""), f"{monitor} {best:.4f}" if isinstance(best, float) else ""
    if not history or "epoch" not in history[-1]:
        return "", ""
    monitor, mode = config.get("monitor"), config.get("monitor_mode")
    finite = [row[monitor] for row in history if monitor in row and row[monitor] == row[monitor]]
    if not finite or mode not in ("min", "max"):
        return int(history[-1]["epoch"]), ""
    return int(history[-1]["epoch"]), f"{monitor} {(max if mode == 'max' else min)(finite):.4f} so far"


def read_run(path: str | Path) -> Run:
    """A run directory as a Run; a UsageError naming the folder when it is not one."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise UsageError(f"{path}: no such folder; give a run directory like "
                         "results/<experiment_id>/<time>-<id>")
    run = load_run_dir(run_dir)
    if not run.config and not run.record:
        raise UsageError(f"{path}: not a run directory (no config.json or run.json); give a folder "
                         "like results/<experiment_id>/<time>-<id>")
    return run


def load_run_dir(run_dir: Path, history: bool = True) -> Run:
    """The files of a run directory as a Run (empty parts where a JSON file is missing or
    broken; history.csv read now, or when first asked for)."""
    return Run(run_dir, read_json_object(run_dir / "config.json"), read_json_object(run_dir / "run.json"),
               read_json_object(run_dir / "metrics.json"), read_history(run_dir) if history else None)


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

    def to_pandas(self, aggregate: bool = False) -> Any:
        """A pandas DataFrame of `rows()`, or of `aggregate()` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ExpkitError("to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.aggregate() if aggregate else self.rows())

    def groups(self, by: list[str] | None = None) -> list[Group[Run]]:
        """The runs grouped by setting: every argument but the seed, or the flags `by`."""
        return group_runs(self, by)

    def aggregate(self, by: list[str] | None = None) -> list[dict[str, Any]]:
        """One flat dict per group: its settings, `n` (the finished runs the numbers come
        from), `runs` (those runs), `excluded` (the others, "RUN_DIR (killed)"), and per summary
        metric (test_acc, best_val_loss, ...) `<metric>_n` (its number of values),
        `<metric>_mean`, `_std`, `_ci_low`, `_ci_high` (the 95% interval of the mean,
        Student's t; NaN from one value)."""
        out = []
        for group in self.groups(by):
            row: dict[str, Any] = {**group.settings, "n": group.n,
                                   "runs": [str(r.path) for r in group.counted],
                                   "excluded": [f"{r.path} ({status})" for r, status in
                                                zip(group.runs, group.statuses, strict=True)
                                                if status != "finished"]}
            for metric in dict.fromkeys(k for r in group.counted for k in r.summary()):
                s = group.stats(metric)
                if s is not None:
                    row |= {f"{metric}_n": s.n, f"{metric}_mean": s.mean, f"{metric}_std": s.std,
                            f"{metric}_ci_low": s.low, f"{metric}_ci_high": s.high}
            out.append(row)
        return out


def runs(results_dir: str | Path = "results", experiment_id: str | None = None,
         status: str | None = None, **config: Any) -> Runs:
    """Every run under `results_dir` (oldest first), optionally filtered like `Runs.filter`.
    Runs whose files have not changed since the last call come from the summary cache
    (RESULTS/.expkit/), so that thousands of runs are read in a second."""
    folder = Path(results_dir)
    own = folder / safe_name(experiment_id) if experiment_id is not None else None
    if own is not None and not own.is_dir():
        return Runs()  # an experiment's runs are in its own folder: no folder, no runs
    found = Runs(experiment_runs(own) if own is not None else all_runs(folder))
    found.sort(key=lambda r: start_order(r.record, r.path))
    return found.filter(status, experiment_id, **config)


def experiment_runs(folder: Path) -> list[Run]:
    """The runs of one experiment folder, by folder name (through the summary cache)."""
    return summaries.experiment_runs(folder, _read_summarized, _from_cache)


def all_runs(results_dir: Path) -> list[Run]:
    """The runs of every experiment folder under `results_dir` (through the summary cache)."""
    return summaries.all_runs(results_dir, _read_summarized, _from_cache)


def repeat_runs(results_dir: Path, experiment_id: str, name: str) -> list[Run]:
    """Every run of `expkit repeat`'s group `name` (oldest first; a seed may have run twice)."""
    mine = [run for run in experiment_runs(results_dir / safe_name(experiment_id))
            if isinstance(group := run.record.get("group"), dict) and group.get("name") == name
            and isinstance(group.get("seed"), int)]
    return sorted(mine, key=lambda run: start_order(run.record, run.path))


def group_members(results_dir: Path, experiment_id: str, name: str) -> dict[int, Run]:
    """The runs of `expkit repeat`'s group `name`, by seed (the newest one of a seed that ran twice)."""
    return {run.record["group"]["seed"]: run for run in repeat_runs(results_dir, experiment_id, name)}


def _from_cache(path: Path, config: dict[str, Any], record: dict[str, Any], metrics: dict[str, Any],
                derived: dict[str, Any]) -> Run:
    return Run(path, config, record, metrics, None, derived)


def _read_summarized(run_dir: Path) -> Run:
    """A run from its files (history.csv only if its summary needs it); a history.csv that
    cannot be parsed counts as none (the run is still listed)."""
    run = load_run_dir(run_dir, history=False)
    try:
        run.derived  # noqa: B018 (read now: what the cache keeps)
    except (OSError, ValueError):
        run._history = []
    return run


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
