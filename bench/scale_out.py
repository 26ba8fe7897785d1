"""Scale-out figures: one rank vs two under torchrun (gloo, CPU), and a sweep's trials per minute.

    python bench/scale_out.py [--rounds 3] [--epochs 2] [--trials 8] [--workers 2]

The torchrun processes run interleaved (1 rank, 2 ranks, 1, 2, ...) on real Fashion-MNIST
when installed, MLP [64], global batch 64, OMP_NUM_THREADS=1 per rank; we report the median
wall time of each whole `torchrun` command. Then one sweep of --trials trials (1 epoch each,
--workers local workers, SQLite) is timed as a whole: trials per minute. Figures go to
bench/out/scale_out.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from whole_run import REPO, timed


def main() -> None:
    """Run both measurements; print and write the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/scale_out.json")
    ns = parser.parse_args()
    work = tempfile.mkdtemp()
    env = {**os.environ, "MPLCONFIGDIR": os.path.join(work, "mpl"), "OMP_NUM_THREADS": "1",
           "EXPKIT_CONFIG": os.path.join(work, "config.yaml")}
    flags = ["--experiment_id=mnist", "--dataset=fashion_mnist", "--hidden_sizes=[64]",
             "--use_cuda=false", "--seed=0", "--batch_size=64", f"--epochs={ns.epochs}"]

    def torchrun(n: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={n}", str(REPO / "run.py"), *flags]

    timed(torchrun(1), env, work)  # warm-up: page cache, font cache, config.yaml
    walls: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(ns.rounds):
        for n in (1, 2):
            wall, _, code = timed(torchrun(n), env, work)
            if code != 0:
                raise SystemExit(f"torchrun with {n} ranks failed ({code}): {' '.join(torchrun(n))}")
            walls[n].append(wall)
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"torchrun 1 rank  {one:6.2f}s [{min(walls[1]):.2f}-{max(walls[1]):.2f}]")
    print(f"torchrun 2 ranks {two:6.2f}s [{min(walls[2]):.2f}-{max(walls[2]):.2f}]  "
          f"x{two / one:.2f} of 1 rank ({os.cpu_count()} CPUs here)")

    sweep = [sys.executable, str(REPO / "run.py"), "sweep", "--experiment_id=mnist",
             "--dataset=fashion_mnist", "--trials", str(ns.trials), "--workers", str(ns.workers),
             "--space", "lr=loguniform:1e-4:1e-2", "--space", "hidden_sizes=choice:[32],[64],[128]",
             "--seed", "0", "--epochs=1", "--use_cuda=false", "--name", "bench"]
    wall, _, code = timed(sweep, {**env, "OMP_NUM_THREADS": "1"}, work)
    if code != 0:
        raise SystemExit(f"sweep failed ({code}): {' '.join(sweep)}")
    rate = ns.trials / wall * 60
    print(f"sweep: {ns.trials} trials (1 epoch each, {ns.workers} workers) in {wall:.1f}s: "
          f"{rate:.1f} trials/minute")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"rounds": ns.rounds, "epochs": ns.epochs,
                                  "one_rank": walls[1], "two_ranks": walls[2],
                                  "sweep": {"trials": ns.trials, "workers": ns.workers,
                                            "seconds": wall, "trials_per_minute": rate}}, indent=2))
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
