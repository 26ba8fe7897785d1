"""SLURM batch jobs: the job script, sbatch, and each attempt's record (`jobs`);
`python -m expkit.slurm requeued RUN_DIR` is what a job script runs before it requeues itself.

Imports: `config`, `rundir` and `expkit.errors`; the commands that use it live in `expkit.cli`.
"""
