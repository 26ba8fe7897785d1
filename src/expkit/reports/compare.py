"""`expkit compare`: the arguments that differ between runs, their metrics, and compare.png.

    expkit compare results/mnist/20261128-*           # run directories or globs
    expkit compare --experiment_id=mnist --last 5     # the newest five runs of an experiment
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import textwrap
from pathlib import Path
from typing import Any

from expkit.errors import UsageError
from expkit.reports.plotting import metric_names
from expkit.reports.tables import n_cell
from expkit.rundir.groups import Group
from expkit.rundir.results import Run, Runs, read_run, repeat_runs, runs
from expkit.rundir.values import as_typed, flag_of
from expkit.utils.files import atomic_write
from expkit.utils.stats import summarize
from expkit.utils.suggest import closest

#: config keys that differ between any two runs without meaning anything
_NOISE = {"experiment_id"}


def select_runs(targets: list[str], results_dir: Path, experiment_id: str | None = None,
                last: int | None = None) -> Runs:
    """Runs named by folders or globs (a repeat's folder, results/repeats/<name>: the runs of
    that repeat), or the `last` newest runs of `experiment_id`."""
    selected = Runs()
    for target in targets:
        matches = sorted(glob.glob(target)) if any(c in target for c in "*?[") else [target]
        if not matches:
            raise UsageError(f"{target}: matches no folder")
        for match in matches:
            if (Path(match) / REPEAT_RECORD).is_file():
                selected += _repeat_runs(Path(match))
            elif Path(match).is_dir() or match == target:
                selected.append(read_run(match))
    if experiment_id is not None or last is not None:
        pool = runs(results_dir, experiment_id)
        if experiment_id is not None and not pool:
            known = sorted(p.name for p in results_dir.iterdir()
                           if p.is_dir() and not p.name.startswith(".") and p.name != "repeats") \
                if results_dir.is_dir() else []
            near = closest(experiment_id, known)
            raise UsageError(f"--experiment_id={experiment_id}: no runs under {results_dir}"
                             + (f" (did you mean '{near}'?)" if near else ""),
                             hint=f"experiments with runs there: {', '.join(known)}" if known else None)
        selected += pool[-(last or len(pool)):]
    folders: dict[Path, Path] = {}  # each folder resolved once (thousands of runs share one)
    unique = {}
    for run in selected:
        if run.path.parent not in folders:
            folders[run.path.parent] = run.path.parent.resolve()
        unique[folders[run.path.parent] / run.path.name] = run
    if len(unique) < 1:
        raise UsageError("compare needs runs: compare RUN_DIR RUN_DIR ... (or a glob), or "
                         "--experiment_id=ID --last N")
    return Runs(unique.values())


#: what marks a repeat's folder (results/repeats/<name>/repeat.json, written by `expkit repeat`)
REPEAT_RECORD = "repeat.json"


def _repeat_runs(folder: Path) -> list[Run]:
    """The runs of the repeat whose folder is `folder` (every run of its group, under the
    results folder two levels up)."""
    try:
        record = json.loads((folder / REPEAT_RECORD).read_text())
        name, experiment_id = str(record["name"]), str(record["experiment_id"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{folder / REPEAT_RECORD}: unreadable; it is not a repeat's record"
                         ) from None
    members = repeat_runs(folder.parent.parent, experiment_id, name)
    if not members:
        raise UsageError(f"{folder}: the repeat {name} has no runs under "
                         f"{folder.parent.parent / experiment_id}")
    return members


def differing(selected: list[Run]) -> list[str]:
    """Dotted config keys whose values are not the same in every run (as JSON: 1 and 1.0, or
    true and 1, differ; a missing key is null)."""
    flats = [r.flat_config for r in selected]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    out = []
    for key in keys:
        if key in _NOISE:
            continue
        values = [f.get(key) for f in flats]
        first = values[0]
        if all(type(v) is type(first) and v == first for v in values):
            continue  # the same everywhere (the common case, decided without encoding)
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            out.append(key)
    return out


def label(run: Run, keys: list[str]) -> str:
    """A run's legend entry: its id and its differing arguments, by flag name."""
    args = ", ".join(f"{flag_of(k, run.record)}={as_typed(run.flat_config.get(k))}" for k in keys)
    return f"{run.id} ({args})" if args else run.id


def compare_table(selected: list[Run], keys: list[str]) -> str:
    """Rows: each run's id, status, differing arguments, and its final/best/test metrics."""
    summaries = [r.summary() for r in selected]
    metric_cols = list(dict.fromkeys(k for s in summaries for k in s
                                     if k.startswith(("final_val", "best_val", "test_"))))
    header = ["run", "status", *(flag_of(k, selected[0].record) for k in keys), *metric_cols]
    rows = [[r.id, r.status, *(as_typed(r.flat_config.get(k)) for k in keys),
             *(f"{s[c]:.4f}" if c in s else "" for c in metric_cols)]
            for r, s in zip(selected, summaries, strict=True)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def mean_curve(histories: list[list[dict[str, float]]], key: str
               ) -> tuple[list[float], list[float], list[float]]:
    """(epochs, mean, std) of one history column over runs, epoch by epoch (each epoch over the
    runs that reached it; std 0 where one run did)."""
    by_epoch: dict[float, list[float]] = {}
    for rows in histories:
        for n, row in enumerate(rows):
            if key in row:
                by_epoch.setdefault(row.get("epoch", n + 1), []).append(row[key])
    epochs = sorted(by_epoch)
    stats = [summarize(by_epoch[e]) for e in epochs]
    return epochs, [s.mean for s in stats], [0.0 if s.n == 1 else s.std for s in stats]


#: compare.png draws at most this many runs (or settings): more lines than colours say nothing
MAX_SERIES = 20


def plot_compare(selected: list[Run], keys: list[str] | None, path: Path,
                 groups: list[Group[Run]] | None = None, memo: Path | None = None
                 ) -> tuple[Path, str]:
    """compare.png: one panel per metric, one colour per run, train dashed and val solid; with
    `groups`, one colour per setting: its mean curve and, over two runs or more, a band of
    ± one standard deviation around the val mean. Returns the path and what was left out (the
    newest MAX_SERIES runs or settings are drawn; "" when all were).

    `memo` (a JSON file) remembers what each drawn plot was drawn from: the labels, the runs
    and their history.csv's size and mtime. A plot whose inputs have not changed, and whose
    file is as it was written, is not drawn again. `keys` (the differing arguments, for each
    run's label) are computed here when None and needed."""
    note = ""
    if groups is not None and len(groups) > MAX_SERIES:
        note = f"the newest {MAX_SERIES} of {len(groups)} settings drawn"
        groups = groups[-MAX_SERIES:]
    elif groups is None and len(selected) > MAX_SERIES:
        note = f"the newest {MAX_SERIES} of {len(selected)} runs drawn; choose with --last or run folders"
        selected = selected[-MAX_SERIES:]
    if groups is None and keys is None:
        keys = differing(selected)
    drawn = ([(f"{g.label()} (N={n_cell(g)})", g.counted) for g in groups] if groups is not None
             else [(label(r, keys or []), [r]) for r in selected])
    inputs = _fingerprint(drawn)
    if memo is not None and _unchanged(memo, path, inputs):
        return path, note
    _draw([(text, [r.history for r in members]) for text, members in drawn], path)
    if memo is not None:
        _remember(memo, path, inputs)
    return path, note


def _fingerprint(drawn: list[tuple[str, list[Run]]]) -> str:
    """What a plot is drawn from, as text: each series' label, and each run's history.csv
    (path, size and modification time): a run that trained on changes it."""
    parts = []
    for text, members in drawn:
        stamps = []
        for run in members:
            try:
                stat = (run.path / "history.csv").stat()
                stamps.append([str(run.path), stat.st_size, stat.st_mtime_ns])
            except OSError:
                stamps.append([str(run.path), None, None])
        parts.append([text, stamps])
    return json.dumps(parts)


def _file_stamp(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _unchanged(memo: Path, path: Path, inputs: str) -> bool:
    """Whether the plot at `path` was drawn from `inputs` and is the file that was written."""
    try:
        entry = json.loads(memo.read_text()).get(str(path.resolve()))
    except (OSError, ValueError, AttributeError):
        return False
    stamp = _file_stamp(path)
    return isinstance(entry, dict) and stamp is not None and entry.get("file") == stamp \
        and entry.get("inputs") == hashlib.sha256(inputs.encode()).hexdigest()


def _remember(memo: Path, path: Path, inputs: str) -> None:
    """Record what the plot at `path` was just drawn from (best effort: a read-only folder
    only means the next compare draws it again)."""
    try:
        known = json.loads(memo.read_text()) if memo.is_file() else {}
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    known[str(path.resolve())] = {"file": _file_stamp(path),
                                  "inputs": hashlib.sha256(inputs.encode()).hexdigest()}
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(memo, lambda f: f.write(json.dumps(known).encode()))
    except OSError:
        pass


def _draw(series: list[tuple[str, list[list[dict[str, float]]]]], path: Path) -> None:
    """Draw compare.png from each series' label and its runs' histories."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    names = list(dict.fromkeys(n for _, hs in series for h in hs if h for n in metric_names(h)))
    banded = any(len(hs) > 1 for _, hs in series)
    legend_height = 0.3 * (len(series) + 1)
    fig = Figure(figsize=(6 * max(len(names), 1), 4.2 + legend_height), dpi=100)
    colours = [f"C{i % 10}" for i in range(len(series))]
    for i, name in enumerate(names or ["(no history)"]):
        ax = fig.add_subplot(1, max(len(names), 1), i + 1)
        for (_, histories), colour in zip(series, colours, strict=True):
            for split, style in (("train", "--"), ("val", "-")):
                epochs, means, stds = mean_curve(histories, f"{split}_{name}")
                if not epochs:
                    continue
                ax.plot(epochs, means, style, color=colour, marker="o", markersize=3)
                if split == "val" and len(histories) > 1:
                    ax.fill_between(epochs, [m - s for m, s in zip(means, stds, strict=True)],
                                    [m + s for m, s in zip(means, stds, strict=True)],
                                    color=colour, alpha=0.2, linewidth=0)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles: list[Any] = [Line2D([], [], color=c) for c in colours]
    labels = [textwrap.shorten(text, 160) for text, _ in series]
    handles += [Line2D([], [], color="k", ls="--"), Line2D([], [], color="k")]
    labels += ["train (mean)" if banded else "train", "val (mean)" if banded else "val"]
    if banded:
        handles.append(Patch(color="k", alpha=0.2, linewidth=0))
        labels.append("val ± 1 std over seeds")
    fig.legend(handles, labels, loc="lower center", fontsize=8, frameon=False,
               ncols=3 if banded else 1)
    fig.tight_layout(rect=(0, legend_height / (4.2 + legend_height), 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def print_comparison(selected: list[Run], groups: list[Group[Run]], grouped: bool,
                     fmt: str | None) -> list[str] | None:
    """What `expkit compare` prints: the runs side by side, then (when runs form groups) the
    groups' table with its footnote and tests; with a `fmt` other than text, only the groups'
    table, ready for a file. Returns the differing argument names (the plot's labels) when it
    computed them (the text format's table of runs)."""
    from expkit.reports.tables import footnote, group_table, significance, summary_metrics

    metrics = summary_metrics(selected)
    keys = None
    if fmt in (None, "text"):
        keys = differing(selected)
        print(compare_table(selected, keys))
        if grouped:
            print(f"\n{group_table(groups, metrics)}\n{footnote()}")
            for line in significance(groups, metrics):
                print(line)
    else:  # the table alone on stdout: `... --format=latex > table.tex`
        print(group_table(groups, metrics, fmt))
    return keys
