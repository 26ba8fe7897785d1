"""Sample text from a trained char_lm run (the vocabulary comes from its checkpoint: no corpus).

    python wild_west/sample_char_lm.py RUN_DIR [--prompt "def "] [--length 300] [--top_k 20]
"""

import argparse

import torch

import expkit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run_dir")
parser.add_argument("--prompt", default="def ")
parser.add_argument("--length", type=int, default=300, help="characters to sample")
parser.add_argument("--temperature", type=float, default=0.8)
parser.add_argument("--top_k", type=int, default=20)
parser.add_argument("--seed", type=int, default=0)
ns = parser.parse_args()

run = expkit.load_run(ns.run_dir)
print(run.model.generate(ns.prompt, ns.length, ns.temperature, ns.top_k,
                         generator=torch.Generator().manual_seed(ns.seed)))
