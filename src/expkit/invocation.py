"""How this process was started, so that every command a run suggests works as typed.

A run started as `python run.py ...` suggests `python run.py resume RUN_DIR`; one started as
`expkit ...` suggests `expkit resume RUN_DIR`, or the full path of the `expkit` it ran when
that one is not the first on the PATH (a venv that is not activated).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

_PREFIX: list[str] = ["expkit"]


def _on_path(name: str, program: Path) -> bool:
    found = shutil.which(name)
    return found is not None and os.path.realpath(found) == os.path.realpath(program)


def remember(prog: str) -> None:
    """Record how the command line was started (`prog` as the CLI names itself)."""
    python = "python" if _on_path("python", Path(sys.executable)) else sys.executable
    if prog.endswith(".py"):
        _PREFIX[:] = [python, sys.argv[0] if sys.argv and sys.argv[0] else prog]
    elif prog.endswith("-m expkit"):
        _PREFIX[:] = [python, "-m", "expkit"]
    else:
        script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("expkit")
        _PREFIX[:] = ["expkit" if _on_path("expkit", script) else str(script.absolute())]


def command(*args: str) -> str:
    """A shell command that runs `expkit ARGS` the way this process was started."""
    return " ".join(shlex.quote(part) for part in (*_PREFIX, *args))
