#!/usr/bin/env python
"""Run an experiment from the lab registry, as the seed README promises:

    python run.py --experiment_id=mnist --use_cuda=false --hidden_sizes="[64]"
    python run.py --help                          # the registered experiments
    python run.py --experiment_id=mnist --help    # that experiment's arguments
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # works before `pip install -e .`

from expkit import run_cli

if __name__ == "__main__":
    run_cli(registry="lab.registry")
