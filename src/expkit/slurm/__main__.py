"""`python -m expkit.slurm requeued RUN_DIR`: what a job script runs before it requeues its job."""

import sys

from expkit.slurm.jobs import main

raise SystemExit(main(sys.argv[1:]))
