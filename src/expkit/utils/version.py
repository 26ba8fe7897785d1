"""The installed expkit's version, for `expkit --version` and every run's record."""

from __future__ import annotations


def version() -> str:
    """The installed expkit's version, from its package metadata ("unknown" when expkit runs
    from a source tree that was never installed)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("expkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
