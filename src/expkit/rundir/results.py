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
import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError, UsageError
from expkit.rundir import summaries
from expkit.rundir.dirs import read_json_object, safe_name, shown_status, start_order
from expkit.utils.stats import Summary, summarize


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

    def groups(self, by: list[str] | None = None) -> list[Group]:
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
    found = Runs(experiment_runs(own) if own is not None and own.is_dir() else all_runs(folder))
    found.sort(key=lambda r: start_order(r.record, r.path))
    return found.filter(status, experiment_id, **config)


def experiment_runs(folder: Path) -> list[Run]:
    """The runs of one experiment folder, by folder name (through the summary cache)."""
    return summaries.experiment_runs(folder, _read_summarized, _from_cache)


def all_runs(results_dir: Path) -> list[Run]:
    """The runs of every experiment folder under `results_dir` (through the summary cache)."""
    return summaries.all_runs(results_dir, _read_summarized, _from_cache)


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


#: config keys (by last part) that say how a run was recorded, not what it trained: runs that
#: differ only in these (and the seed) are repeats of one setting
NOT_SETTINGS = frozenset({"seed", "use_wandb", "use_tensorboard", "use_mlflow",
                          "mlflow_log_checkpoints", "save_checkpoints", "progress"})
_SPLIT_PREFIXES = ("best_", "final_")
_SPLITS = ("train_", "val_", "test_")


def _setting_keys(run: Run) -> dict[str, Any]:
    return {k: v for k, v in run.flat_config.items() if _is_setting(k)}


@lru_cache(maxsize=4096)
def _is_setting(key: str) -> bool:
    return key.rsplit(".", 1)[-1] not in NOT_SETTINGS


@dataclass
class Group:
    """Runs of one setting (the same arguments but the seed, or the same `by` flags): each
    metric of their summaries as mean, std and a Student's t interval (`stats`).

    Only finished runs count: a run that is still running, was killed, stopped or failed has
    no final numbers, so it is listed (`excluded`, `note`) but never averaged. N is the number
    of values a statistic was computed from: `n` runs in all, `n_of(metric)` per metric."""

    settings: dict[str, Any]  # dotted key -> value: what tells this group from the others
    runs: list[Run]
    _stats: dict[str, Summary | None] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def statuses(self) -> list[str]:
        """Each run's status, as seen once when the group is first asked (a table shows one
        moment)."""
        return [r.status for r in self.runs]

    @property
    def counted(self) -> list[Run]:
        """The runs whose numbers count: the finished ones."""
        return [r for r, s in zip(self.runs, self.statuses, strict=True) if s == "finished"]

    @property
    def excluded(self) -> list[Run]:
        """The runs left out of the statistics (not finished), with their status."""
        return [r for r, s in zip(self.runs, self.statuses, strict=True) if s != "finished"]

    @property
    def n(self) -> int:
        """How many runs the statistics are computed from (the finished ones)."""
        return len(self.counted)

    def n_of(self, metric: str) -> int:
        """How many values the metric's statistics are computed from."""
        return len(self.values(metric))

    def note(self) -> str:
        """What was left out, e.g. "3 runs, 1 killed: not counted" ("" when nothing was)."""
        if not self.excluded:
            return ""
        statuses: dict[str, int] = {}
        for status in self.statuses:
            if status != "finished":
                statuses[status] = statuses.get(status, 0) + 1
        left = ", ".join(f"{k} {s}" for s, k in statuses.items())
        return f"{len(self.runs)} runs, {left}: not counted"

    def label(self) -> str:
        """The group's settings by flag name ("lr=0.01, batch_size=64"), or its experiment's id
        when one setting is all there is."""
        record = self.runs[0].record
        return ", ".join(f"{flag_of(k, record)}={as_typed(v)}" for k, v in self.settings.items()) \
            or self.runs[0].experiment_id

    def values(self, metric: str) -> list[float]:
        """The metric's value in each counted run that has it (summary names: test_acc,
        best_val_loss)."""
        return [s[metric] for s in (r.summary() for r in self.counted) if metric in s]

    def stats(self, metric: str) -> Summary | None:
        """Mean, std and 95% interval of the metric over the group's counted runs (None: no
        counted run has it; std and interval NaN for one value)."""
        if metric not in self._stats:
            values = self.values(metric)
            self._stats[metric] = summarize(values) if values else None
        return self._stats[metric]


def group_runs(selected: list[Run], by: list[str] | None = None) -> list[Group]:
    """The runs grouped by every argument but the seed (and NOT_SETTINGS), or by the flags `by`
    (flag names or dotted keys), in order of first appearance. A group's `settings` are the keys
    whose values differ between groups (or the `by` flags)."""
    missing = object()
    buckets: dict[str, list[Run]] = {}
    keys: dict[str, dict[str, Any]] = {}
    for run in selected:
        setting = ({flag: run.get(flag, missing) for flag in by} if by is not None
                   else _setting_keys(run))
        key = json.dumps({k: (None if v is missing else v) for k, v in setting.items()},
                         sort_keys=True, default=str)
        buckets.setdefault(key, []).append(run)
        keys.setdefault(key, setting)
    if by is not None:
        shown = list(by)
    else:
        flats = list(keys.values())
        names = list(dict.fromkeys(k for flat in flats for k in flat))
        shown = [k for k in names if k != "experiment_id"
                 and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
        if len({r.experiment_id for r in selected}) > 1:
            shown.insert(0, "experiment_id")
    return [Group({k: (None if keys[key].get(k, missing) is missing else keys[key].get(k))
                   for k in shown}, runs) for key, runs in buckets.items()]


def direction_of(metric: str, selected: list[Run]) -> str | None:
    """"max" or "min": which way is better for a summary metric (test_acc, best_val_loss), as
    the runs' metrics.json recorded their experiment's declaration; None when unknown."""
    name = metric
    for prefix in _SPLIT_PREFIXES:
        name = name.removeprefix(prefix)
    base = name
    for prefix in _SPLITS:
        base = base.removeprefix(prefix)
    for run in selected:
        declared = run.metrics.get("directions") or {}
        if base in declared:
            return str(declared[base])
        monitor = str(run.metrics.get("monitor") or "")
        if monitor and monitor.split("_", 1)[-1] == base and run.metrics.get("mode"):
            return str(run.metrics["mode"])
    return "min" if base == "loss" else None


#: a group's mean is marked best only when it comes from this many values or more
MIN_N_FOR_BEST = 2


def best_group(groups: list[Group], metric: str, direction: str | None) -> int | None:
    """The index of the group with the best mean of `metric` among the groups whose mean comes
    from MIN_N_FOR_BEST values or more (None: fewer than two groups, no direction, or no such
    group): one run's value is never "best" on its own."""
    if direction not in ("max", "min") or len(groups) < 2:
        return None
    means = [(s.mean, i) for i, g in enumerate(groups)
             if (s := g.stats(metric)) is not None and s.n >= MIN_N_FOR_BEST]
    if not means:
        return None
    return (max(means) if direction == "max" else min(means))[1]
