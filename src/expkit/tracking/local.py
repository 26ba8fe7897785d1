"""Local files, always on: config.json, history.csv, history.png, metrics.json in the run dir.

history.png costs ~0.3 s a draw (plus ~0.75 s to import matplotlib once). A child process
draws it (expkit.reports.plotting.PlotWorker), so the import and the draws run beside the training,
not in it; still, a draw takes CPU time from a machine that trains on all its cores, so after
an epoch it is redrawn only while plotting stays within PLOT_BUDGET of the training time so
far (the sum of the epochs' times; so every epoch once epochs take more than a few seconds),
and always after the last epoch. (A thread was tried: it fights the training loop for the GIL and
doubled a 1.2 s epoch.) Without a worker the plot is drawn in the run itself.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from expkit.reports.plotting import PlotWorker, plot_history
from expkit.tracking.base import Tracker
from expkit.utils.files import atomic_write_json, atomic_write_text

PLOT_BUDGET = 0.03  # fraction of the training time that history.png may take
_FIRST_PLOT_GUESS = 1.0  # seconds, matplotlib import included


class LocalFiles(Tracker):
    """The Tracker that writes the run directory's human-readable files."""

    def __init__(self, run_dir: Path, title: str = "",
                 warn: Callable[[str], None] | None = None, epochs: int | None = None,
                 max_steps: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        # the last evaluation is drawn at once: the draw overlaps the test
        self.last = ("step", max_steps) if max_steps is not None else ("epoch", epochs)
        self.worker: PlotWorker | None = None
        with contextlib.suppress(OSError):  # started now: matplotlib's import overlaps the
            self.worker = PlotWorker()       # run's own start-up; else drawn in this process
        self.title = title
        self.warn = warn or (lambda message: None)
        self.plot_seconds = 0.0
        self.last_plot_cost = _FIRST_PLOT_GUESS
        self.plotted_rows = 0
        self.rows: list[dict[str, float]] = []
        self.plot_error: str | None = None

    def log_config(self, config: dict[str, Any]) -> None:
        """config.json: the full validated arguments, loadable by the experiment's Args."""
        atomic_write_json(self.run_dir / "config.json", config)

    def restore(self, rows: list[dict[str, float]]) -> None:
        """On resume: history.csv from the checkpoint's history (a kill may have come between
        the checkpoint and the csv of the same epoch)."""
        self.rows = rows
        if rows:
            self._write_csv(rows)

    def log_epoch(self, rows: list[dict[str, float]]) -> None:
        """Rewrite history.csv (atomically); redraw history.png when it fits the budget."""
        self.rows = rows
        self._write_csv(rows)
        trained = sum(row.get("epoch_time", 0.0) for row in rows)
        key, end = self.last
        last = end is not None and rows[-1].get(key, 0) >= end
        if last or self.plot_seconds + self.last_plot_cost <= PLOT_BUDGET * trained:
            self._plot()

    def _write_csv(self, rows: list[dict[str, float]]) -> None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.run_dir / "history.csv", out.getvalue())

    def log_summary(self, summary: dict[str, Any]) -> None:
        """metrics.json: final, best and test values."""
        atomic_write_json(self.run_dir / "metrics.json", summary)

    def close(self, status: str) -> None:
        """Draw the final history.png if the last epochs are not on it yet; end the worker."""
        if self.rows and self.plotted_rows != len(self.rows):
            self._plot()
        if self.worker is not None:
            done = self._collect()
            self.worker.close()
            self.worker = None
            if not done:  # it died before drawing the last rows: draw them here
                self._plot()

    def _plot(self) -> None:
        path = self.run_dir / "history.png"
        if self.worker is not None:
            if self._collect() and self.worker.submit(self.rows, path, self.title):
                self.plotted_rows = len(self.rows)
                return
            self.worker.close()  # it died: from now on, plots are drawn here
            self.worker = None
        started = time.perf_counter()
        try:
            plot_history(self.rows, path, self.title)
            self.plotted_rows = len(self.rows)
        except Exception as e:  # a plot must never fail a run, but it must not fail silently
            self._failed(f"{type(e).__name__}: {e}")
        self._charge(time.perf_counter() - started)

    def _collect(self) -> bool:
        """Wait for the worker's answer to the last request; False if it died instead."""
        assert self.worker is not None
        if not self.worker.pending:
            return True
        reply = self.worker.collect()
        if reply is None:
            return False
        seconds, error = reply
        if error is not None:
            self._failed(error)
        self._charge(seconds)
        return True

    def _charge(self, seconds: float) -> None:
        self.last_plot_cost = seconds
        self.plot_seconds += seconds

    def _failed(self, error: str) -> None:
        if self.plot_error is None:
            self.warn(f"warning: history.png could not be drawn ({error}); history.csv is complete")
        self.plot_error = error
