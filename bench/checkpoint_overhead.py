"""Cost of checkpointing: expkit epochs with checkpoints on vs off, interleaved in one process.

    python bench/checkpoint_overhead.py               # batch 64, 5 rounds
    python bench/checkpoint_overhead.py --rounds 9 --batch_size 512

"on" writes checkpoints/last.pt every epoch (atomically, with fsync) and best.pt on
improvement, exactly as a run does; both sides keep history.csv/png and the console line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import expkit_trainer, fmt, interleave, load_data, one_more_epoch, summarize

from expkit import Trainer, save_checkpoint


def main() -> None:
    """Run the interleaved rounds and print/write the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/out/checkpoint_overhead.json"))
    ns = parser.parse_args()
    data, source = load_data()
    print(f"data: {source}; batch {ns.batch_size}; torch {torch.__version__}")
    on, off = expkit_trainer(data, ns.batch_size), expkit_trainer(data, ns.batch_size, False)
    times = interleave({"off": lambda: one_more_epoch(off), "on": lambda: one_more_epoch(on)},
                       ns.rounds)
    row = summarize(times, "on", "off")
    print(f"{fmt('checkpoints off', row['off'])}  {fmt('checkpoints on', row['on'])}  "
          f"overhead {100 * (row['ratio_median'] - 1):+.1f}% (median of rounds)")
    write_ms, size = checkpoint_write_cost(on)
    print(f"one last.pt write (state + atomic rename + fsync): median {write_ms:.1f} ms, "
          f"{size / 1024:.0f} KiB")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"data": source, "batch_size": ns.batch_size, **row,
                                  "write_ms": write_ms, "bytes": size}, indent=2))


def checkpoint_write_cost(trainer: Trainer, repeats: int = 21) -> tuple[float, int]:
    """Median milliseconds of one last.pt write of `trainer`'s state, and its size."""
    folder = Path(tempfile.mkdtemp())
    costs = []
    for _ in range(repeats):
        started = time.perf_counter()
        save_checkpoint(folder / "last.pt", trainer.state_dict())
        costs.append(1000 * (time.perf_counter() - started))
    return statistics.median(costs), (folder / "last.pt").stat().st_size


if __name__ == "__main__":
    main()
