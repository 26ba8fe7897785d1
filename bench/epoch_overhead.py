"""expkit's epoch vs a hand-written loop on the same in-memory tensor, interleaved in one process.

    python bench/epoch_overhead.py                     # batch 64 and 512, 5 rounds each
    python bench/epoch_overhead.py --batch_sizes 64 --rounds 7 --out bench/out/epoch.json

Both sides do the same work per epoch: one randperm, whole-batch slices, forward/backward/
step, loss and correct counts summed on the device, then a validation pass. expkit runs
with its defaults on (checkpoints, history.csv, history.png within its time budget, console).
Data: real Fashion-MNIST when installed, otherwise generated (said in the output).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from common import expkit_trainer, fmt, interleave, load_data, mlp, one_more_epoch, summarize

from expkit.data.base import DataSplits
from lab.models.mlp import MLP


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
        trainer = expkit_trainer(data, batch)
        ref = mlp(data)
        ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        times = interleave({"hand": lambda: hand_written_epoch(ref, ref_opt, data, batch, g),
                            "expkit": lambda: one_more_epoch(trainer)}, ns.rounds)
        row = summarize(times, "expkit", "hand")
        results[f"batch_{batch}"] = row
        print(f"batch {batch:>4}: {fmt('hand-written', row['hand'])}  {fmt('expkit', row['expkit'])}"
              f"  ratio {row['ratio_median']:.3f} (median of rounds)")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"data": source, "rounds": ns.rounds, "results": results}, indent=2))
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
