"""expkit's epoch vs a hand-written loop on the same in-memory tensor, interleaved in one process.

    python bench/epoch_overhead.py                     # batch 64 and 512, 5 rounds each
    python bench/epoch_overhead.py --batch_sizes 64 --rounds 7 --out bench/out/epoch.json

Both sides do the same work per epoch: one randperm, whole-batch slices, forward/backward/
step, loss and correct counts summed on the device, then a validation pass. expkit runs
with its defaults on (history.csv, history.png within its time budget, console line).
Data: real Fashion-MNIST when installed, otherwise generated (said in the output).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from expkit.console import Console
from expkit.data.base import DataSplits, Split, split_off
from expkit.tracking.base import Tracking
from expkit.tracking.local import LocalFiles
from expkit.training.callbacks import ConsoleLine
from expkit.training.loop import Trainer
from lab.datasets.mnist import ImageData, ImageDataArgs
from lab.models.mlp import MLP, MLPArgs


def load_data() -> tuple[DataSplits, str]:
    """Fashion-MNIST from the system folder, else 60,000 generated 28x28 images."""
    try:
        return ImageData(ImageDataArgs(name="fashion_mnist", download=False),
                         Path(tempfile.mkdtemp())).load(), "real Fashion-MNIST"
    except Exception:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(60000, 1, 28, 28, generator=g), torch.randint(0, 10, (60000,), generator=g)
        train, val = split_off(Split(x, y), 0.1)
        return DataSplits(10, (1, 28, 28), train=train, val=val, test=None), "generated data (Fashion-MNIST absent)"


def hand_written_epoch(model: MLP, opt: torch.optim.Optimizer, data: DataSplits, batch: int,
                       g: torch.Generator) -> None:
    """What a researcher writes by hand: the baseline."""
    model.train()
    x, y = data.train.x, data.train.y
    loss_sum, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
    order = torch.randperm(len(x), generator=g)
    for start in range(0, len(x), batch):
        idx = order[start:start + batch]
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum += loss.detach() * len(yb)
        correct += (logits.argmax(1) == yb).sum()
    _ = (loss_sum / len(x)).item(), (correct / len(x)).item()
    model.eval()
    assert data.val is not None
    with torch.inference_mode():
        for start in range(0, len(data.val), 1024):
            model(data.val.x[start:start + 1024])


def main() -> None:
    """Run the interleaved rounds and print/write the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/out/epoch_overhead.json"))
    ns = parser.parse_args()
    data, source = load_data()
    print(f"data: {source}, {len(data.train)} train examples; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results = {}
    for batch in ns.batch_sizes:
        torch.manual_seed(0)
        ref = MLP(MLPArgs(hidden_sizes=[64]), data.input_size, data.num_classes)
        ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
        ours = MLP(MLPArgs(hidden_sizes=[64]), data.input_size, data.num_classes)
        run_dir = Path(tempfile.mkdtemp())
        trainer = Trainer(ours, torch.optim.Adam(ours.parameters(), lr=1e-3), None, data,
                          epochs=0, batch_size=batch, eval_batch_size=1024,
                          device=torch.device("cpu"), seed=0, monitor="val_acc",
                          monitor_mode="max",
                          callbacks=[ConsoleLine(Console(io.StringIO())),
                                     Tracking([LocalFiles(run_dir)])])
        g = torch.Generator().manual_seed(0)
        times: dict[str, list[float]] = {"expkit": [], "hand": []}
        def run_hand() -> None:
            hand_written_epoch(ref, ref_opt, data, batch, g)

        def run_expkit() -> None:
            trainer.epochs += 1
            trainer.fit()

        sides = {"hand": run_hand, "expkit": run_expkit}
        for i in range(ns.rounds + 1):  # the first round warms up and is dropped
            for name in (["hand", "expkit"] if i % 2 else ["expkit", "hand"]):  # A B, B A, ...
                t = time.perf_counter()
                sides[name]()
                times[name].append(time.perf_counter() - t)
        ratios = [a / b for a, b in zip(times["expkit"][1:], times["hand"][1:], strict=True)]
        row = {name: {"median": statistics.median(v[1:]), "min": min(v[1:]), "max": max(v[1:])}
               for name, v in times.items()}
        row["ratio_median"] = statistics.median(ratios)
        results[f"batch_{batch}"] = row
        print(f"batch {batch:>4}: hand-written {row['hand']['median']:.3f}s "
              f"[{row['hand']['min']:.3f}-{row['hand']['max']:.3f}]  expkit "
              f"{row['expkit']['median']:.3f}s [{row['expkit']['min']:.3f}-"
              f"{row['expkit']['max']:.3f}]  ratio {row['ratio_median']:.3f} (median of pairs)")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"data": source, "rounds": ns.rounds, "results": results,
                                  "numpy": np.__version__, "python": sys.version.split()[0]},
                                 indent=2))
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
