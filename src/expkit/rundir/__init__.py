"""The run directory on disk, read and written without torch: its layout and run.json
(`dirs`), the reproducibility record (`provenance`), results read back as plain Python
(`results`, behind `expkit.runs()`), and what SLURM's queue says of a run (`jobqueue`).

Imports: `expkit.errors`, `expkit.utils`, `expkit.config`. No torch: `expkit list`,
`expkit.runs()` and the reports stay fast.
"""
