"""Early stopping: a pure decision, and the callback that asks the loop to stop."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Literal

from expkit.training.callbacks import Callback

if TYPE_CHECKING:
    from expkit.training.callbacks import TrainerView

_IMPROVES = {"min": operator.lt, "max": operator.gt}


def decide(value: float, best: float | None, wait: int, *, patience: int, min_delta: float,
           mode: Literal["min", "max"]) -> tuple[float | None, int, bool]:
    """(new best, epochs without improvement, stop?) after one more value of the monitor."""
    shift = -min_delta if mode == "max" else min_delta
    if best is None or _IMPROVES[mode](value + shift, best):
        return value, 0, False
    return best, wait + 1, wait + 1 >= patience


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    def __init__(self, monitor: str, mode: Literal["min", "max"], patience: int,
                 min_delta: float) -> None:
        self.monitor, self.mode = monitor, mode
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.wait = 0

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        """Update the count; ask the loop to stop when patience runs out."""
        if self.monitor not in metrics:
            return
        self.best, self.wait, stop = decide(metrics[self.monitor], self.best, self.wait,
                                            patience=self.patience, min_delta=self.min_delta,
                                            mode=self.mode)
        if stop and not trainer.should_stop:
            trainer.should_stop = True
            trainer.stop_reason = (f"early stopping: {self.monitor} did not improve by more than "
                                   f"{self.min_delta} for {self.patience} epochs")

    def state_dict(self) -> dict[str, Any]:
        """Best value and epochs waited."""
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore best value and epochs waited."""
        self.best, self.wait = state["best"], state["wait"]
