"""Jupyter: whether this process is a notebook kernel, one output line that updates in place,
and an image shown inline. IPython is imported only inside a kernel (it is one's dependency)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, JupyterLab, VS Code's notebooks); False in a
    terminal IPython, a script or a test process."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class LiveLine:
    """One line of output that is replaced, not repeated: a display whose text each `show`
    updates (the notebook keeps only the last one)."""

    def __init__(self) -> None:
        self._handle: Any = None

    def show(self, text: str) -> None:
        """Show `text` in place of what the line showed before."""
        display = _ipython_display()
        if self._handle is None:
            self._handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            self._handle.update({"text/plain": text}, raw=True)


def show_image(path: Path) -> None:
    """Show a PNG inline in the notebook's output."""
    from IPython.display import Image

    _ipython_display()(Image(filename=str(path)))  # type: ignore[no-untyped-call]


def _ipython_display() -> Any:
    """IPython's `display` (untyped: hence Any)."""
    import importlib

    return importlib.import_module("IPython.display").display
