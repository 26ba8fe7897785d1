"""history.png: loss and metric curves per epoch, train dashed and val solid."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from expkit.files import atomic_write

_SPLITS = ("train", "val")


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """Base names of the metrics logged per split (loss first), e.g. ["loss", "acc"]."""
    names: list[str] = []
    for key in rows[0] if rows else {}:
        split, _, base = key.partition("_")
        if split in _SPLITS and base and base not in names:
            names.append(base)
    return sorted(names, key=lambda n: (n != "loss", n))


def plot_history(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Draw one panel per metric (train vs val over epochs) and write the PNG atomically."""
    from matplotlib.figure import Figure  # imported here: costs ~0.6 s, only when plotting
    from matplotlib.ticker import MaxNLocator

    names = metric_names(rows)
    fig = Figure(figsize=(5 * max(len(names), 1), 4), dpi=100)
    epochs = [row["epoch"] for row in rows]
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, max(len(names), 1), i + 1)
        for split, style in zip(_SPLITS, ("--", "-"), strict=True):
            key = f"{split}_{name}"
            if key in rows[0]:
                ax.plot(epochs, [row[key] for row in rows], style, marker="o", markersize=3,
                        label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
