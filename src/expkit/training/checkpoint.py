"""Checkpoints: last.pt after every epoch (and on a stop signal), best.pt on improvement.

Written atomically (temp file, fsync, rename): a crash mid-write leaves the previous file.
They hold only tensors and plain types, so loading uses `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from expkit.errors import ExpkitError
from expkit.training.callbacks import Callback
from expkit.utils.files import atomic_write

if TYPE_CHECKING:
    from expkit.training.callbacks import TrainerView

FORMAT = 1
LAST, BEST = "last.pt", "best.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, tagged as an expkit checkpoint."""
    atomic_write(path, lambda f: torch.save({"expkit_checkpoint": FORMAT, **state}, f))


def reason(error: BaseException, limit: int = 200) -> str:
    """An exception as one short line for a message: its first line, cut at `limit`
    characters, or its type's name when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read an expkit checkpoint with weights_only=True; one clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ExpkitError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError, KeyError) as e:
        raise ExpkitError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                          f"{reason(e)}") from None
    if not isinstance(state, dict) or state.get("expkit_checkpoint") != FORMAT:
        raise ExpkitError(f"{path}: not an expkit checkpoint (no 'expkit_checkpoint' marker)")
    return state


def check_state(state: dict[str, Any]) -> None:
    """A dataset's state goes into every checkpoint, which loads with weights_only=True: state
    that would not load back (a NumPy array, an object) is one clear error before the run."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception as e:
        raise ExpkitError(f"the dataset's state cannot be saved in a checkpoint: {reason(e)}",
                          hint="keep DataInfo.state to numbers, strings, tensors, and lists or "
                               "dicts of them") from None


def load_weights(model: torch.nn.Module, state: dict[str, Any], source: Path) -> None:
    """Load a checkpoint's model weights; a shape or key mismatch is one clear error."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        detail = " ".join(str(e).split())[:300]
        raise ExpkitError(f"{source}: its weights do not fit this model (different shapes or "
                          f"layers?): {detail}") from None


class Checkpointing(Callback):
    """Saves checkpoints/last.pt each epoch and checkpoints/best.pt when the monitor improves."""

    def __init__(self, folder: Path, extra: Callable[[], dict[str, Any]]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(exist_ok=True)
        for stale in self.folder.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        self.extra = extra  # experiment-level facts: config, data info, tracker ids

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """Write last.pt, and best.pt if this epoch is the best so far."""
        extra = self.extra()
        save_checkpoint(self.folder / LAST, {**trainer.state_dict(), **extra})
        if trainer.best_epoch == trainer.epoch:
            save_checkpoint(self.folder / BEST, {**trainer.weights(), "epoch": trainer.epoch,
                                                 "metrics": metrics, **extra})

    def on_interrupt(self, trainer: TrainerView) -> None:
        """Write last.pt with the position inside the epoch, so a resume continues exactly."""
        save_checkpoint(self.folder / LAST, {**trainer.state_dict(), **self.extra()})
