"""The console of a run: what is printed is also appended to the run's log.txt."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO


class Console:
    """Prints lines to stdout and, once a run directory exists, to its log.txt."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.log: TextIO | None = None
        self.quiet = False  # set on ranks other than 0 under torchrun: one rank speaks

    def attach(self, log_path: Path) -> None:
        """Also append every later line to `log_path`."""
        self.log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def print(self, line: str = "") -> None:
        """Show `line` and log it."""
        if self.quiet:
            return
        print(line, file=self.stream, flush=True)
        if self.log:
            self.log.write(line + "\n")

    def write_log(self, text: str) -> None:
        """Put `text` in log.txt only (e.g. a traceback the console shows as one line)."""
        if self.log:
            self.log.write(text if text.endswith("\n") else text + "\n")

    def close(self) -> None:
        """Close log.txt."""
        if self.log:
            self.log.close()
            self.log = None
