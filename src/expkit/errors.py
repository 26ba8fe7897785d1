"""Errors meant for people: each becomes one line per problem and an exit code, never a traceback."""

from __future__ import annotations


class ExpkitError(Exception):
    """A problem the user can fix; `lines` are printed one per line, `hint` once after them."""

    exit_code = 1

    def __init__(self, *lines: str, hint: str | None = None) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines
        self.hint = hint


class UsageError(ExpkitError):
    """Bad command-line input or a bad config file: exit code 2, nothing written."""

    exit_code = 2
