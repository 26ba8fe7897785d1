"""What a run does to its process: the device it asks for, the seeds, deterministic
algorithms, and where SIGINT/SIGTERM go while it trains (a stop after the current step)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from expkit.errors import ExpkitError, UsageError
from expkit.training.checkpoint import BEST, LAST

if TYPE_CHECKING:
    from expkit.training.loop import Trainer

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def resolve_device(use_cuda: bool | None) -> torch.device:
    """The device `--use_cuda` asks for; True without CUDA is an error, not a silent fallback."""
    available = torch.cuda.is_available()
    if use_cuda and not available:
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise UsageError(f"--use_cuda: got true, but {why} (torch {torch.__version__}); "
                         "use --use_cuda=false, or install a CUDA build of torch (see docs/get-started.md)")
    return torch.device("cuda" if (available if use_cuda is None else use_cuda) else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_file(path: Path, prefer: str = BEST) -> Path:
    """A checkpoint file given itself or a run directory (its best.pt, else last.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in (prefer, LAST, BEST):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise ExpkitError(f"{path}: no checkpoints/{BEST} or {LAST} in this folder")
    return path


class StoppedBeforeTraining(Exception):
    """A stop signal arrived before the trainer existed: nothing to save."""


class StopSignals:
    """Where SIGINT/SIGTERM go: to the trainer (stop after this step) once there is one."""

    def __init__(self, say: Any) -> None:
        self.say = say
        self.trainer: Trainer | None = None

    def __call__(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.trainer is None:
            raise StoppedBeforeTraining(name)
        if self.trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.trainer.stop_requested == name:  # the same again (a job script forwards it)
            return
        self.trainer.stop_requested = name
        self.say(f"{name} received: finishing this step, then saving a checkpoint")


@contextlib.contextmanager
def stop_on_signals(handler: StopSignals) -> Iterator[None]:
    """Route SIGINT/SIGTERM to `handler` inside the block (main thread only)."""

    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def make_deterministic() -> None:
    """Only deterministic kernels: bit-identical reruns on the same machine and versions."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


