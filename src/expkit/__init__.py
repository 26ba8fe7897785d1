"""expkit: write the model, the dataset and the step; get args, CLI, loop, metrics and runs for free.

Importing expkit does not import torch; `expkit.load_run` imports it when first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_run", "runs"]


def __getattr__(name: str) -> Any:
    """Lazy attributes: `expkit.load_run` (imports torch only when used), `expkit.runs`."""
    if name == "load_run":
        from expkit.loading import load_run

        return load_run
    if name == "runs":
        from expkit.results import runs

        return runs
    raise AttributeError(f"module 'expkit' has no attribute {name!r}")
