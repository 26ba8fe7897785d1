"""Evaluate a finished run of any experiment on its test split: the test metrics the
experiment declares, and the model's predictions for a few test examples.

    python wild_west/evaluate_run.py RUN_DIR [--checkpoint last] [--examples 5]
"""

import argparse

import torch

import expkit
from expkit import load_machine_config

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run_dir")
parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
parser.add_argument("--examples", type=int, default=5, help="test examples to show predictions for")
ns = parser.parse_args()

run = expkit.load_run(ns.run_dir, checkpoint=ns.checkpoint, machine=load_machine_config())
test = run.experiment.build_data().test  # the run's args: the same data, the same split
if test is None:
    raise SystemExit(f"{run.args.experiment_id} has no test split")
print(f"{run.args.experiment_id}: epoch {run.epoch} weights ({ns.checkpoint}), {len(test)} test examples")
for name, value in run.evaluate(test).items():
    print(f"  {name:<12} {value:.6g}")

# predictions: the model's `predict` if it has one (target units, probabilities), else its output
batch = next(iter(test.batches(ns.examples)))
inputs, targets = (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])
with torch.no_grad():
    output = getattr(run.model, "predict", run.model)(inputs)
print(f"predictions for the first {len(targets)} test examples:")
for i, (out, target) in enumerate(zip(output, targets, strict=True)):
    if out.dim() == 1 and len(out) > 1:  # one score per class
        prob = out.softmax(0)
        shown = f"class {int(prob.argmax())} (p {float(prob.max()):.3f})"
    elif out.numel() == 1:  # a number (a regression's prediction, a probability)
        shown = f"{float(out):.4g}"
    else:
        shown = str(out.tolist())
    print(f"  #{i}  target {target.tolist()}  predicted {shown}")
