"""`expkit repeat`: one setting trained with several seeds, as one group of ordinary runs
(`command`), its seeds shared among local worker processes (`worker`). The group's table and
the comparison of groups are in `expkit.reports.tables`.

Imports: `engine` and the layers below it; never `sweep`, `slurm` or `cli`.
"""
