"""The training loop (`loop`) and what it calls: callbacks and the view of the trainer they
get (`callbacks`), checkpoints (`checkpoint`, `rng`), early stopping, the progress bar,
evaluation and declared metrics (`evaluate`, `metrics`), optimizers and schedules (`optim`),
torchrun's process group (`distributed`).

Imports: `expkit.errors`, `expkit.utils`, `expkit.config`, `data`, `models`, torch. Never
`rundir`, `reports`, `tracking`, `engine`, `sweep`, `slurm` or `cli`: the loop knows no run
directory.
"""
