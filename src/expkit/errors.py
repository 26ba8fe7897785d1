"""Errors meant for people: each becomes one line per problem and an exit code, never a traceback."""

from __future__ import annotations


def one_line(text: str) -> str:
    """`text` with every character a terminal would not show as one (newlines, control and
    separator characters such as \\x1e) escaped as Python writes them, so a message that quotes
    user input (a path, a value, a key) is always one line and shows what was typed."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


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
