"""Epoch time as the data grows: the training set replicated 1x, 2x, 4x (expkit's Trainer).

    python bench/scaling.py [--rounds 3] [--batch_size 64]

Linear scaling means seconds per epoch / replication stays flat.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import expkit_trainer, load_data, one_more_epoch

from expkit import DataSplits, Split


def main() -> None:
    """Time epochs at each size and print seconds per epoch and per 1x of data."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/out/scaling.json"))
    ns = parser.parse_args()
    data, source = load_data()
    print(f"data: {source}; batch {ns.batch_size}")
    rows = {}
    for times in (1, 2, 4):
        train = Split(data.train.x.repeat(times, 1, 1, 1), data.train.y.repeat(times))
        grown = DataSplits(data.num_classes, data.input_shape, train=train, val=data.val, test=None)
        trainer = expkit_trainer(grown, ns.batch_size)
        one_more_epoch(trainer)  # warm-up
        seconds = []
        for _ in range(ns.rounds):
            started = time.perf_counter()
            one_more_epoch(trainer)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        rows[f"{times}x"] = {"examples": len(train), "epoch_seconds": median,
                             "per_1x": median / times}
        print(f"{times}x ({len(train):>6} examples): {median:6.2f} s/epoch, {median / times:.2f} s "
              "per 1x of data")
        del trainer, train, grown
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"data": source, "batch_size": ns.batch_size, "rows": rows},
                                 indent=2))


if __name__ == "__main__":
    main()
