"""`python -m expkit ...`: the same as the `expkit` command."""

from expkit.cli import run_cli

run_cli()
