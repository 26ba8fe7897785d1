"""What people look at after runs: history.png (`plotting`), `expkit compare` and compare.png
(`compare`), report.html and results/index.html (`report`) with their interactive charts
(`charts`, and the vendored uPlot in `vendor/`).

Imports: `expkit.errors`, `expkit.utils`, `expkit.rundir`, matplotlib. No torch.
"""
