"""`expkit lr-find --experiment_id=ID FLAGS`: Smith's learning-rate range test on the
experiment's own data, model and optimizer. The learning rate rises exponentially from
--lr_min to --lr_max over --steps optimizer steps on training batches, stopped early when the
loss blows up (its smoothed value over four times its lowest, or not finite). It suggests the
rate at the lowest smoothed loss divided by ten (the point where the loss still falls fast,
well short of where it diverges), prints the rule, and writes the curve and its plot to
RESULTS/lr_find/<experiment>-<time>/ (lr_find.csv, lr_find.png): a range test, not a run.

    expkit lr-find --experiment_id=mnist --dataset=fashion_mnist
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from expkit.data.augment import augmented
from expkit.engine.phases import load_data, prepare_process
from expkit.training.distributed import SINGLE
from expkit.utils.files import atomic_write

#: the smoothing of the loss (an exponential moving average, bias-corrected)
BETA = 0.98
#: the test stops when the smoothed loss exceeds this many times its lowest value
BLOWUP = 4.0
#: the suggestion: the rate at the lowest smoothed loss divided by this
DIVIDE = 10.0
RULE = f"the learning rate at the lowest smoothed loss, divided by {DIVIDE:g}"


@dataclass
class Finding:
    """A range test's curve (learning rate, loss, smoothed loss per step) and its suggestion."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    stopped: str  # why the test ended
    folder: Path


def lr_find(experiment: Any, lr_min: float, lr_max: float, steps: int, results_dir: Path) -> Finding:
    """Run the range test for `experiment` (its args validated); write its files."""
    cuda = experiment.args.use_cuda is not False and torch.cuda.is_available()
    device = prepare_process(experiment, SINGLE, torch.device("cuda" if cuda else "cpu"))
    data = load_data(experiment, SINGLE)
    model = experiment.build_model(data.info).to(device)
    optimizer = experiment.build_optimizer(model)
    train = data.train.to(device)
    generator = torch.Generator().manual_seed(int(experiment.args.seed))
    augment = getattr(data, "augment", None)
    factor = (lr_max / lr_min) ** (1 / max(steps - 1, 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, lowest, stopped = 0.0, math.inf, f"reached --lr_max={lr_max:g} after {steps} steps"
    model.train()
    while len(lrs) < steps and not stopped.startswith("the loss"):
        for i, batch in enumerate(train.batches(experiment.args.batch_size, generator, 0, SINGLE.shard())):
            lr = lr_min * factor ** len(lrs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = augmented(augment, batch, 0, i, 0, device)
            loss, _ = model.step(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            lrs.append(lr)
            losses.append(value)
            average = BETA * average + (1 - BETA) * value
            smoothed.append(average / (1 - BETA ** len(lrs)))
            if not math.isfinite(value) or smoothed[-1] > BLOWUP * lowest:
                stopped = f"the loss blew up at lr {lr:.3g} (step {len(lrs)})"
                break
            lowest = min(lowest, smoothed[-1])
            if len(lrs) >= steps:
                break
    finite = [(s, lr) for s, lr in zip(smoothed, lrs, strict=True) if math.isfinite(s)]
    suggestion = min(finite)[1] / DIVIDE if finite else None
    folder = _write(results_dir, experiment.args.experiment_id, lrs, losses, smoothed, suggestion)
    return Finding(lrs, losses, smoothed, suggestion, stopped, folder)


def _write(results_dir: Path, experiment_id: str, lrs: list[float], losses: list[float],
           smoothed: list[float], suggestion: float | None) -> Path:
    """RESULTS/lr_find/<experiment>-<time>/lr_find.csv and lr_find.png."""
    from matplotlib.figure import Figure

    from expkit.rundir.dirs import safe_name

    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(results_dir) / "lr_find" / f"{safe_name(experiment_id)}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "lr_find.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        writer.writerows([k + 1, lr, loss, s]
                         for k, (lr, loss, s) in enumerate(zip(lrs, losses, smoothed, strict=True)))
    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(lrs, losses, color="C0", alpha=0.3, label="loss")
    ax.plot(lrs, smoothed, color="C0", label="smoothed loss")
    if suggestion is not None:
        ax.axvline(suggestion, color="C3", ls="--", label=f"suggested lr {suggestion:.3g}")
    ax.set_xscale("log")
    finite = [s for s in smoothed if math.isfinite(s)]
    if finite:  # the blow-up would flatten the rest
        ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), max(finite[0], min(finite)) * 1.5 + 1e-12)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"{experiment_id}: learning-rate range test")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(folder / "lr_find.png", lambda f: fig.savefig(f, format="png"))
    return folder
