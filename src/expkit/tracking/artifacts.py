"""Artifacts: text and images an experiment saves at each evaluation (a language model's
samples, a grid of inputs or predictions), as files under RUN_DIR/artifacts/NAME/ and handed
to every tracker that takes them (wandb: media, TensorBoard: text and images); report.html
shows them.

An experiment returns them from `BaseExperiment.evaluation_artifacts(trainer)`; a callback
calls `trainer.artifacts.save(name, value)`. A value is a `str` (saved as EPOCH.txt) or an
image tensor, (H, W) or (C, H, W) with C = 1 or 3, floats in [0, 1] or uint8 (EPOCH.png).
Rank 0 alone saves. No matplotlib: PNGs are written here, with zlib.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from expkit.errors import ExpkitError
from expkit.rundir.results import ARTIFACTS
from expkit.training.callbacks import Callback
from expkit.utils.files import atomic_write

if TYPE_CHECKING:
    from expkit.training.callbacks import TrainerView

T = TypeVar("T")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def png_bytes(image: torch.Tensor) -> bytes:
    """A PNG of an image tensor: (H, W) or (C, H, W), C = 1 or 3, floats in [0, 1] or uint8."""
    image = image.detach().cpu()
    if image.dim() == 3 and image.shape[0] in (1, 3):
        image = image.permute(1, 2, 0) if image.shape[0] == 3 else image[0]
    elif image.dim() != 2:
        raise ExpkitError(f"an image artifact is (H, W) or (C, H, W) with C = 1 or 3, got "
                          f"shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    height, width = image.shape[:2]
    color = 2 if image.dim() == 3 else 0  # RGB or grayscale, 8 bits a sample
    rows = image.reshape(height, -1).numpy()
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


class Artifacts:
    """Saves a run's artifacts (on rank 0) and hands them to the trackers."""

    def __init__(self, run_dir: Path, trackers: list[Any], is_main: bool = True) -> None:
        self.folder = Path(run_dir) / ARTIFACTS
        self.trackers, self.is_main = trackers, is_main
        self.epoch = 0  # the evaluation the next artifacts belong to

    def save(self, name: str, value: str | torch.Tensor) -> Path | None:
        """Save `value` as artifact `name` of the current evaluation; the file's path (None on
        ranks other than 0)."""
        if not _NAME.fullmatch(name):
            raise ExpkitError(f"artifact name {name!r}: use letters, digits, '_', '.' and '-'")
        if not self.is_main:
            return None
        text = isinstance(value, str)
        path = self.folder / name / f"{self.epoch}.{'txt' if text else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = value.encode() if isinstance(value, str) else png_bytes(value)
        atomic_write(path, lambda f: f.write(data))
        for tracker in self.trackers:
            tracker.log_artifact(name, path, value, self.epoch)
        return path


class SaveArtifacts(Callback):
    """At each evaluation (epoch end), saves what `produce(trainer)` returns."""

    def __init__(self, artifacts: Artifacts,
                 produce: Callable[[TrainerView], dict[str, str | torch.Tensor]]) -> None:
        self.artifacts, self.produce = artifacts, produce

    def on_epoch_start(self, trainer: TrainerView) -> None:
        """Callbacks that save during the period save under the evaluation it ends with."""
        self.artifacts.epoch = trainer.next_evaluation()

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """Save this evaluation's artifacts (on rank 0; `produce` runs there only), named by
        the epoch (step-based runs: the step)."""
        self.artifacts.epoch = trainer.epoch if trainer.max_steps is None else trainer.steps
        if self.artifacts.is_main:
            for name, value in evaluating(trainer.model, lambda: self.produce(trainer)).items():
                self.artifacts.save(name, value)


def evaluating(model: torch.nn.Module, produce: Callable[[], T]) -> T:
    """`produce()` with the model in eval mode and gradients off (as evaluation sees it: no
    dropout, batch-norm's running statistics), the model's mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return produce()
    finally:
        model.train(was_training)
