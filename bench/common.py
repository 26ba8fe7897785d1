"""What the benchmarks share: the data (real Fashion-MNIST when installed) and an expkit Trainer."""

from __future__ import annotations

import io
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from expkit import (
    DataSplits,
    Split,
    Trainer,
    split_off,
    standard_callbacks,
)
from lab.datasets.mnist import ImageData, ImageDataArgs
from lab.models.mlp import MLP, MLPArgs


def load_data() -> tuple[DataSplits, str]:
    """Fashion-MNIST from the system folder, else 60,000 generated 28x28 images."""
    try:
        return ImageData(ImageDataArgs(name="fashion_mnist", download=False),
                         Path(tempfile.mkdtemp())).load(), "real Fashion-MNIST"
    except Exception:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(60000, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (60000,), generator=g)
        train, val = split_off(Split(x, y), 0.1)
        return (DataSplits(10, (1, 28, 28), train=train, val=val, test=None),
                "generated data (Fashion-MNIST absent)")


def mlp(data: DataSplits) -> MLP:
    """The benchmark model: MLP 784-64-10."""
    return MLP(MLPArgs(hidden_sizes=[64]), data.input_size, data.classes())


def expkit_trainer(data: DataSplits, batch: int, checkpoints: bool = True) -> Trainer:
    """A Trainer with expkit's default callbacks (files, plot budget, console; checkpoints)."""
    torch.manual_seed(0)
    model = mlp(data)
    run_dir = Path(tempfile.mkdtemp())
    callbacks = standard_callbacks(run_dir, io.StringIO(), checkpoints=checkpoints)
    return Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-3), None, data, epochs=0,
                   batch_size=batch, eval_batch_size=1024, device=torch.device("cpu"), seed=0,
                   monitor="val_acc", monitor_mode="max", callbacks=callbacks)


def one_more_epoch(trainer: Trainer) -> None:
    """Train `trainer` for one more epoch (with its callbacks)."""
    trainer.epochs += 1
    trainer.fit()


def interleave(sides: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Time each side once per round, alternating the order (A B, B A, ...); round 0 is warm-up."""
    import time

    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds + 1):
        for name in (names if i % 2 else names[::-1]):
            started = time.perf_counter()
            sides[name]()
            if i:
                times[name].append(time.perf_counter() - started)
    return times


def summarize(times: dict[str, list[float]], a: str, b: str) -> dict[str, Any]:
    """Median/min/max per side and the median of the per-round ratios a/b."""
    row: dict[str, Any] = {name: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                           for name, v in times.items()}
    row["ratio_median"] = statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
    return row


def fmt(name: str, stats: dict[str, float]) -> str:
    """`name 1.234s [1.200-1.300]`."""
    return f"{name} {stats['median']:.3f}s [{stats['min']:.3f}-{stats['max']:.3f}]"
