"""expkit: write the model, the dataset and the step; get args, CLI, loop, metrics and runs for free.

Importing expkit does not import torch; `expkit.load_run` imports it when first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "load_run", "runs", "version"]


def version() -> str:
    """The installed expkit's version, from its package metadata ("unknown" when expkit runs
    from a source tree that was never installed)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("expkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def __getattr__(name: str) -> Any:
    """Lazy attributes: `expkit.__version__` (package metadata), `expkit.load_run` (imports
    torch only when used), `expkit.runs`."""
    if name == "__version__":
        return version()
    if name == "load_run":
        from expkit.loading import load_run

        return load_run
    if name == "runs":
        from expkit.results import runs

        return runs
    raise AttributeError(f"module 'expkit' has no attribute {name!r}")
