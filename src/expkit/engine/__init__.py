"""A run, from validated args to a finished run directory: `BaseExperiment` (what an
experiment builds), the runner that wires data, model, loop, callbacks and trackers into a
run directory, `resume`, `reproduce`, and `load_run` (a run back in Python).

Imports: every layer below it (`config`, `rundir`, `reports`, `data`, `models`, `training`,
`tracking`); never `sweep`, `slurm` or `cli`.
"""
