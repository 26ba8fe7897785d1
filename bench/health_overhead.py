"""What the gradient watch and the timers cost: whole `run.py` processes with them on (the
default) and off (`--grad_norm=false --timing=false`), interleaved (on off, off on, ...).

    python bench/health_overhead.py [--rounds 9] [--epochs 2] [--dataset fashion_mnist]
    python bench/health_overhead.py --on=--ema_decay=0.999 --off=   # what any flags cost

Per round: each process's wall time and its history's summed epoch_time (training and
evaluation, without the process's start). We report the median of each round's on/off ratio
(it holds when the machine's speed drifts between rounds) and write bench/out/health_overhead.json.
`--on` and `--off` give each side's own flags (space-separated; by default the "off" side turns
the watch and the timers off), to measure what any switch costs the same way.
Needs the Fashion-MNIST files (Debian's dataset-fashion-mnist) for the default dataset.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFF = ["--grad_norm=false", "--timing=false"]


def one(work: Path, env: dict[str, str], args: list[str]) -> tuple[float, float]:
    """(wall seconds, summed epoch_time) of one run."""
    before = set((work / "results" / "mnist").glob("*")) if (work / "results" / "mnist").exists() else set()
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    [run] = set((work / "results" / "mnist").glob("*")) - before
    with (run / "history.csv").open() as f:
        return wall, sum(float(row["epoch_time"]) for row in csv.DictReader(f))


def main() -> None:
    """Run the rounds; print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--on", default="", help="the flags of the 'on' side (default: none)")
    parser.add_argument("--off", default=" ".join(OFF), help="the flags of the 'off' side")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="expkit-health-"))
    env = {**os.environ, "EXPKIT_CONFIG": str(work / "config.yaml")}
    (work / "config.yaml").write_text(f"results_dir: {work / 'results'}\ncache_dir: {work / 'cache'}\n")
    base = ["--experiment_id=mnist", f"--dataset={options.dataset}", f"--epochs={options.epochs}",
            "--seed=0", "--use_cuda=false", "--save_checkpoints=false"]
    one(work, env, base)  # warm the page cache and the dataset's files
    walls: dict[str, list[float]] = {"on": [], "off": []}
    epochs: dict[str, list[float]] = {"on": [], "off": []}
    for k in range(options.rounds):
        order = ("on", "off") if k % 2 == 0 else ("off", "on")
        for side in order:
            wall, spent = one(work, env, base + (options.off if side == "off" else options.on).split())
            walls[side].append(wall)
            epochs[side].append(spent)
        print(f"round {k + 1}: on {walls['on'][-1]:.2f} s ({epochs['on'][-1]:.2f} s of epochs), "
              f"off {walls['off'][-1]:.2f} s ({epochs['off'][-1]:.2f} s)", flush=True)
    wall_ratio = statistics.median(a / b for a, b in zip(walls["on"], walls["off"], strict=True))
    epoch_ratio = statistics.median(a / b for a, b in zip(epochs["on"], epochs["off"], strict=True))
    figures = {"rounds": options.rounds, "epochs": options.epochs, "dataset": options.dataset,
               "on": options.on, "off": options.off,
               "wall_on_s": statistics.median(walls["on"]), "wall_off_s": statistics.median(walls["off"]),
               "epochs_on_s": statistics.median(epochs["on"]),
               "epochs_off_s": statistics.median(epochs["off"]),
               "wall_ratio": round(wall_ratio, 4), "epoch_ratio": round(epoch_ratio, 4)}
    print(f"on/off: whole run x{wall_ratio:.3f}, epochs x{epoch_ratio:.3f} (medians of {options.rounds} "
          f"interleaved rounds)")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    name = "health_overhead" if (options.on, options.off) == ("", " ".join(OFF)) else "flag_overhead"
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
