"""How this process was started, so that every command a run suggests works as typed.

A run started as `python run.py ...` suggests `python run.py resume RUN_DIR`; one started as
`expkit ...` suggests `expkit resume RUN_DIR`, or the full path of the `expkit` it ran when
that one is not the first on the PATH (a venv that is not activated).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

_PREFIX: list[str] = ["expkit"]


def _on_path(name: str, program: Path) -> bool:
    found = shutil.which(name)
    return found is not None and os.path.realpath(found) == os.path.realpath(program)


def remember(prog: str) -> None:
    """Record how the command line was started (`prog` as the CLI names itself)."""
    python = "python" if _on_path("python", Path(sys.executable)) else sys.executable
    script = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if prog.endswith(".py"):  # the script as it was typed (run.py, ./run.py, /path/run.py)
        _PREFIX[:] = [python, script if Path(script).name == Path(prog).name else prog]
    elif prog.endswith("-m expkit"):
        _PREFIX[:] = [python, "-m", "expkit"]
    else:
        program = Path(script or "expkit")
        _PREFIX[:] = ["expkit" if _on_path("expkit", program) else str(program.absolute())]


def command(*args: str) -> str:
    """A shell command that runs `expkit ARGS` the way this process was started."""
    return " ".join(shlex.quote(part) for part in (*_PREFIX, *args))


def pinned(argv: list[str], values: dict[str, str]) -> list[str]:
    """`argv` with each flag in `values` set to that value (any earlier spelling of it dropped):
    a run's command line with what was drawn or chosen by the machine written out."""
    out: list[str] = []
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0].removeprefix("--")
        if token.startswith("--") and name in values:
            following = argv[i + 1] if i + 1 < len(argv) else ""
            skip = "=" not in token and bool(following) and not following.startswith("--")
            continue
        out.append(token)
    return out + [f"--{name}={value}" for name, value in values.items()]


def remember_python() -> None:
    """A run started from Python (`expkit.run`): the commands it suggests are the command
    line's, `expkit ...` when that is this installation's command, else `python -m expkit`."""
    found = shutil.which("expkit")
    if found and Path(os.path.realpath(found)).parent == Path(os.path.realpath(sys.executable)).parent:
        _PREFIX[:] = ["expkit"]
    else:
        _PREFIX[:] = ["python" if _on_path("python", Path(sys.executable)) else sys.executable,
                      "-m", "expkit"]


@contextlib.contextmanager
def prefix_kept() -> Iterator[None]:
    """The command prefix as it was before the block (a run from Python changes it)."""
    saved = list(_PREFIX)
    try:
        yield
    finally:
        _PREFIX[:] = saved
