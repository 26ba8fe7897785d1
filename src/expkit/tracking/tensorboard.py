"""TensorBoard: per-epoch scalars and, at the end, the run's hparams with its final metrics and
the final history.png as an image.

    tensorboard --logdir results/        # every run with --use_tensorboard=true

Needs the `tensorboard` package (`pip install 'expkit[tensorboard]'`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import torch

from expkit.errors import ExpkitError
from expkit.rundir.results import row_step
from expkit.rundir.values import flatten
from expkit.tracking.base import Tracker


class TensorBoardTracker(Tracker):
    """Writes event files under `folder`: one scalar per metric per epoch (step = epoch)."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ExpkitError("--use_tensorboard needs the tensorboard package: "
                              "pip install 'expkit[tensorboard]'") from None
        self.folder = Path(folder)
        self._writer_class = SummaryWriter
        self.writer: Any = None
        self.hparams: dict[str, Any] = {}
        self.rows_logged = 0  # the last epoch logged: the step of the final history image

    def log_config(self, config: dict[str, Any]) -> None:
        """Keep the arguments for the hparams record (TensorBoard takes numbers, strings, bools)."""
        self.hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                        for k, v in flatten(config).items()}

    def log_epoch(self, rows: list[dict[str, float]]) -> None:
        """Write the newest epoch's metrics as scalars at step = epoch (step-based: the step)."""
        row = rows[-1]
        step = row_step(row)
        self.rows_logged = step
        if self.writer is None:  # after a resume, drop events past the epoch we continue from
            self.writer = self._writer_class(str(self.folder), purge_step=step)
        for key, value in row.items():
            if key not in ("epoch", "step"):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_artifact(self, name: str, path: Path, value: Any, epoch: int) -> None:
        """An evaluation's artifact at step = epoch: text (preformatted) or an image."""
        if self.writer is None:
            self.writer = self._writer_class(str(self.folder), purge_step=epoch)
        if isinstance(value, str):
            self.writer.add_text(f"artifacts/{name}", "    " + value.replace("\n", "\n    "), epoch)
        else:
            image = value.detach().cpu().float()
            image = image / 255 if value.dtype == torch.uint8 else image.clamp(0, 1)
            self.writer.add_image(f"artifacts/{name}", image if image.dim() == 3 else image[None],
                                  epoch)
        self.writer.flush()

    def log_summary(self, summary: dict[str, Any]) -> None:
        """The hparams record: the arguments with the best, final and test metrics."""
        metrics = {f"hparam/{prefix}_{k}": float(v)
                   for prefix, values in (("best", summary.get("best")), ("final", summary.get("final")))
                   for k, v in (values or {}).items() if k != "epoch" and isinstance(v, (int, float))}
        metrics |= {f"hparam/{k}": float(v) for k, v in (summary.get("test") or {}).items()}
        if self.writer is None:
            self.writer = self._writer_class(str(self.folder))
        self.writer.add_hparams(self.hparams, metrics, run_name="hparams")

    def close(self, status: str) -> None:
        """history.png as an image (drawn for the last time by now), then close the event files."""
        plot = self.folder.parent / "history.png"
        if plot.is_file() and self.rows_logged:
            if self.writer is None:
                self.writer = self._writer_class(str(self.folder))
            self.writer.file_writer.add_summary(_png_summary("history", plot.read_bytes()),
                                                self.rows_logged)
        if self.writer is not None:
            self.writer.close()


def _png_summary(tag: str, png: bytes) -> Any:
    """An image summary of PNG bytes as they are (no decoding: no PIL, no matplotlib here)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=image)])
