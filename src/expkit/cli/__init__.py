"""The command line: argv -> one command (`main`), the commands themselves (`commands`,
`cluster`), their shared argv helpers (`options`), shell completion, and `expkit new`'s
templates (`scaffold`, `templates`).

The top layer: it may import any other, but torch only inside a command that trains, so
that `--help`, `list` and argument errors answer in a fraction of a second.
"""

from expkit.cli.main import main, run_cli

__all__ = ["main", "run_cli"]
