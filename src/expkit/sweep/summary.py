"""What a sweep shows: the trials table, the best trial, and sweep.png."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from expkit.sweep.space import import_optuna
from expkit.utils.files import atomic_write


def summarize(study: Any, folder: Path) -> None:
    """Print the trials table and the best trial; draw sweep.png in `folder`."""
    print(trials_table(study))
    best = _best_trial(study)
    if best is not None:
        print(f"best: trial {best.number}  value {best.value:.4f}  "
              + "  ".join(f"{k}={v}" for k, v in best.params.items())
              + f"  {best.user_attrs.get('run_dir', '')}")
    path = plot_sweep(study, folder / "sweep.png")
    if path is not None:
        print(f"plot: {path}")


def _best_trial(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def trials_table(study: Any) -> str:
    """One row per trial: number, state, value, params, run directory."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    jobs = any("slurm_job" in t.user_attrs for t in trials)
    header = ["trial", "state", "value", *names, *(["job"] if jobs else []), "run_dir"]
    rows = [[str(t.number), t.state.name.lower(),
             "" if t.value is None else f"{t.value:.4f}",
             *(str(t.params.get(n, "")) for n in names),
             *([str(t.user_attrs.get("slurm_job", ""))] if jobs else []),
             str(t.user_attrs.get("run_dir", ""))]
            for t in trials]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def plot_sweep(study: Any, path: Path) -> Path | None:
    """sweep.png: Optuna's optimization history and parameter importances, side by side.
    Optuna's plots switch the process's matplotlib style to ggplot: the style is put back after,
    so that a compare.png or history.png drawn later in the same process keeps its own."""
    optuna = import_optuna()
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context():
        return _draw_sweep(study, path)


def _draw_sweep(study: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    panels = []
    for draw in (ovm.plot_optimization_history, ovm.plot_param_importances):
        try:
            ax = draw(study)
        except (ValueError, RuntimeError) as e:  # e.g. importances need 2+ complete trials
            fig, ax = plt.subplots()
            ax.text(0.5, 0.5, f"{draw.__name__}: {e}", ha="center", va="center", wrap=True)
            ax.set_axis_off()
        figure = plt.gcf()
        figure.set_size_inches(6.4, 4.8)
        figure.tight_layout()
        figure.canvas.draw()
        panels.append(figure.canvas.buffer_rgba())  # type: ignore[attr-defined]
        plt.close(figure)
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 4.8))
    for ax, image in zip(axes, panels, strict=True):
        ax.imshow(image)
        ax.set_axis_off()
    fig.suptitle(f"sweep {study.study_name}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path
