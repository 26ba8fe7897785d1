"""Load a finished run (args, best weights, history) and evaluate it on its test split.

    python wild_west/evaluate_run.py results/mnist/20261128-115859-6afb6b [--checkpoint last]
"""

import argparse

import torch

import expkit
from expkit.config import load_machine_config
from lab.datasets.mnist import ImageData

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run_dir")
parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
ns = parser.parse_args()

run = expkit.load_run(ns.run_dir, checkpoint=ns.checkpoint)
data = ImageData(run.args.dataset, load_machine_config().cache_dir).load()  # same args, same data
assert data.test is not None
with torch.no_grad():
    accuracy = (run.model(data.test.x).argmax(1) == data.test.y).float().mean().item()
best = max(row["val_acc"] for row in run.history)
print(f"{run.args.experiment_id}: epoch {run.epoch} weights ({ns.checkpoint}), best val_acc "
      f"{best:.4f}, test accuracy {accuracy:.4f}")
