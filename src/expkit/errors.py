"""Errors meant for people: each becomes one line per problem and an exit code, never a traceback."""

from __future__ import annotations

import sys


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


def report(error: BaseException, prog: str, rank: str = "0") -> int:
    """Tell a person about `error` on stderr and return the exit code: one line per problem
    and the hint once (an ExpkitError), `interrupted` (Ctrl-C: 130), or for anything else one
    line that names it as a bug (1), never a traceback. Under torchrun (`rank` other than "0")
    a usage error is left to rank 0, which parses the same flags; other errors name the rank."""
    if isinstance(error, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    if not isinstance(error, ExpkitError):
        print(f"{prog}: error: unexpected {type(error).__name__}: {one_line(str(error))} (a bug in "
              "expkit or the experiment; EXPKIT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    if rank != "0" and isinstance(error, UsageError):
        return error.exit_code
    for line in error.lines:
        print(f"{prog}: error: {'' if rank == '0' else f'[rank {rank}] '}{one_line(line)}",
              file=sys.stderr)
    if error.hint:
        print(f"{prog}: {one_line(error.hint)}", file=sys.stderr)
    return error.exit_code
