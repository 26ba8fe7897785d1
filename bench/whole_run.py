"""Whole processes, interleaved: `run.py` (5 epochs) vs the hand-written script vs Lightning.

    python bench/whole_run.py [--rounds 5] [--epochs 5] [--no-lightning] [--expkit-arg=--fused=false]

Each command runs --rounds times in turn (A B C, A B C, ...); we report the median wall time,
min-max, the ratio to the hand-written script (the median of each round's own ratio, which
holds when the machine's speed drifts between rounds; the ratio of the medians beside it),
and each process's peak RSS (the kernel's rusage of that child; a child of its own, such as
expkit's plot worker, is counted only if it is larger), and write them to
bench/out/whole_run.json. Lightning is skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MiB, exit code) of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    """Run the rounds; print and write the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--no-lightning", action="store_true",
                        help="leave Lightning out (more rounds of the other two in the same time)")
    parser.add_argument("--expkit-arg", action="append", default=[], metavar="FLAG",
                        help="one more flag for run.py, e.g. --expkit-arg=--fused=false "
                             "(the same per-parameter Adam as the hand-written script)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/whole_run.json")
    ns = parser.parse_args()
    work = tempfile.mkdtemp()
    env = {**os.environ, "MPLCONFIGDIR": os.path.join(work, "mpl"),
           "EXPKIT_CONFIG": os.path.join(work, "config.yaml")}
    epochs = f"--epochs={ns.epochs}"
    commands = {
        "hand-written": [sys.executable, str(REPO / "bench/hand_written.py"), "--epochs", str(ns.epochs)],
        "expkit run.py": [sys.executable, str(REPO / "run.py"), "--experiment_id=mnist",
                          "--dataset=fashion_mnist", "--hidden_sizes=[64]", "--use_cuda=false",
                          "--seed=0", epochs, *ns.expkit_arg],
    }
    if ns.no_lightning:
        print("lightning left out (--no-lightning)")
    elif importlib.util.find_spec("lightning"):
        commands["lightning"] = [sys.executable, str(REPO / "bench/lightning_script.py"),
                                 "--epochs", str(ns.epochs)]
    else:
        print("lightning is not installed (pip install lightning): skipped")
    for cmd in commands.values():  # warm-up: page cache, matplotlib font cache, config.yaml
        timed(cmd, env, work)
    results: dict[str, dict[str, list[float]]] = {n: {"wall": [], "rss": []} for n in commands}
    for _ in range(ns.rounds):
        for name, cmd in commands.items():
            wall, rss, code = timed(cmd, env, work)
            if code != 0:
                raise SystemExit(f"{name} failed with exit code {code}: {' '.join(cmd)}")
            results[name]["wall"].append(wall)
            results[name]["rss"].append(rss)
    base = statistics.median(results["hand-written"]["wall"])
    summary = {}
    for name, figures in results.items():
        wall = statistics.median(figures["wall"])
        paired = statistics.median(a / b for a, b in zip(figures["wall"],
                                                         results["hand-written"]["wall"], strict=True))
        summary[name] = {"wall_median": wall, "wall_min": min(figures["wall"]),
                         "wall_max": max(figures["wall"]), "ratio_to_hand": paired,
                         "ratio_of_medians": wall / base,
                         "peak_rss_mib": statistics.median(figures["rss"])}
        print(f"{name:<14} {wall:6.2f}s [{min(figures['wall']):.2f}-{max(figures['wall']):.2f}]  "
              f"x{paired:.2f} of hand-written (per round; x{wall / base:.2f} of the medians)  "
              f"peak RSS {summary[name]['peak_rss_mib']:.0f} MiB")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"rounds": ns.rounds, "epochs": ns.epochs, "results": summary},
                                 indent=2))
    print(f"wrote {ns.out}")


if __name__ == "__main__":
    main()
