"""`expkit compare`: the arguments that differ between runs, their metrics, and compare.png.

    expkit compare results/mnist/20261128-*           # run directories or globs
    expkit compare --experiment_id=mnist --last 5     # the newest five runs of an experiment
"""

from __future__ import annotations

import glob
import io
import json
import textwrap
from pathlib import Path

from expkit.errors import UsageError
from expkit.reports.plotting import metric_names
from expkit.rundir.results import Run, Runs, as_typed, flag_of, read_run, runs
from expkit.utils.files import atomic_write

#: config keys that differ between any two runs without meaning anything
_NOISE = {"experiment_id"}


def select_runs(targets: list[str], results_dir: Path, experiment_id: str | None = None,
                last: int | None = None) -> Runs:
    """Runs named by folders or globs, or the `last` newest runs of `experiment_id`."""
    selected = Runs()
    for target in targets:
        matches = sorted(glob.glob(target)) if any(c in target for c in "*?[") else [target]
        if not matches:
            raise UsageError(f"{target}: matches no folder")
        selected += [read_run(m) for m in matches if Path(m).is_dir() or m == target]
    if experiment_id is not None or last is not None:
        pool = runs(results_dir, experiment_id)
        if experiment_id is not None and not pool:
            raise UsageError(f"--experiment_id={experiment_id}: no runs under {results_dir}")
        selected += pool[-(last or len(pool)):]
    unique = {r.path.resolve(): r for r in selected}
    if len(unique) < 1:
        raise UsageError("compare needs runs: compare RUN_DIR RUN_DIR ... (or a glob), or "
                         "--experiment_id=ID --last N")
    return Runs(unique.values())


def differing(selected: list[Run]) -> list[str]:
    """Dotted config keys whose values are not the same in every run."""
    flats = [r.flat_config for r in selected]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    return [k for k in keys if k not in _NOISE
            and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


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


def plot_compare(selected: list[Run], keys: list[str], path: Path) -> Path:
    """compare.png: one panel per metric, one colour per run, train dashed and val solid."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    histories = [r.history for r in selected]
    names = list(dict.fromkeys(n for h in histories if h for n in metric_names(h)))
    legend_height = 0.3 * (len(selected) + 1)
    fig = Figure(figsize=(6 * max(len(names), 1), 4.2 + legend_height), dpi=100)
    colours = [f"C{i % 10}" for i in range(len(selected))]
    for i, name in enumerate(names or ["(no history)"]):
        ax = fig.add_subplot(1, max(len(names), 1), i + 1)
        for rows, colour in zip(histories, colours, strict=True):
            epochs = [row.get("epoch", n + 1) for n, row in enumerate(rows)]
            for split, style in (("train", "--"), ("val", "-")):
                key = f"{split}_{name}"
                points = [(e, row[key]) for e, row in zip(epochs, rows, strict=True) if key in row]
                if points:
                    ax.plot(*zip(*points, strict=True), style, color=colour, marker="o", markersize=3)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c) for c in colours]
    labels = [textwrap.shorten(label(r, keys), 160) for r in selected]
    fig.legend([*handles, Line2D([], [], color="k", ls="--"), Line2D([], [], color="k")],
               [*labels, "train", "val"], loc="lower center", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / (4.2 + legend_height), 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path
