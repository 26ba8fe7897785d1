"""Hyperparameter sweeps with Optuna: the spec and its checks (`spec`), the search space
(`space`), the study's storage (`study`), the workers that train each trial as a normal run
(`worker`), the summary (`summary`), and `expkit sweep` itself (`command`).

Imports: `engine` and the layers below it, `slurm` (worker jobs); never `cli`.
"""
