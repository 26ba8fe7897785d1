"""A trainer's state for a checkpoint, and back: weights, optimizer, schedule, scaler,
counters, the pass's place, best epoch, RNGs, an interrupted period's sums, callbacks' states.
What `Trainer.state_dict()` / `load_state_dict()` return and take."""

from __future__ import annotations

from typing import Any

import torch

from expkit.training.rng import rng_state, set_rng_state

Trainer = Any  # expkit.training.loop.Trainer (which imports this module: no cycle, not even typed)


def trainer_state(t: Trainer) -> dict[str, Any]:
    """Everything a resume needs: weights, optimizer, schedule, counters, RNGs, callbacks."""
    return {
        **t.weights(),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.schedule.scheduler.state_dict() if t.schedule else None,
        "scaler": t.scaler.state_dict() if t.scaler else None,
        "epoch": t.epoch, "global_step": t.global_step, "history": t.history,
        "steps": t.steps, "passes": t.passes, "position": t.position,
        "best_epoch": t.best_epoch, "best_value": t.best_value,
        "stop_reason": t.stop_reason if t.should_stop else None,
        "generator": t.generator.get_state(), "rng": rng_state(), "partial": t.partial,
        "callbacks": {cb.key: cb.state_dict() for cb in t.callbacks},
        "grads": t.grads.state() if t.grads is not None else None,
    }


def restore_trainer(t: Trainer, state: dict[str, Any]) -> None:
    """Continue `t` from `trainer_state`'s output (RNG states included)."""
    t.model.load_state_dict(state.get("trained", state["model"]))
    if t.average is not None and state.get("average") is not None:
        t.average.load(state["model"], state["average"])
    t.optimizer.load_state_dict(state["optimizer"])
    if t.schedule is not None and state["scheduler"] is not None:
        t.schedule.scheduler.load_state_dict(state["scheduler"])
    if t.scaler is not None and state["scaler"] is not None:
        t.scaler.load_state_dict(state["scaler"])
    t.epoch, t.global_step = state["epoch"], state["global_step"]
    # checkpoints written before step-based training: one pass per epoch, steps unknown
    t.steps = state.get("steps", 0)
    t.passes, t.position = state.get("passes", t.epoch), state.get("position")
    t.history = list(state["history"])
    t.best_epoch, t.best_value = state["best_epoch"], state["best_value"]
    t.generator.set_state(state["generator"])
    t.partial = state["partial"]
    if t.partial is not None and not t.dist.is_main:
        # the saved sums are over all ranks: count them once, on rank 0
        t.partial = {**t.partial, "seen": 0,
                     "sums": {k: torch.zeros_like(v) for k, v in t.partial["sums"].items()}}
    for cb in t.callbacks:
        if cb.key in state["callbacks"]:
            cb.load_state_dict(state["callbacks"][cb.key])
    if t.grads is not None and state.get("grads"):  # none: written without the watch
        t.grads.load(state["grads"])
    set_rng_state(state["rng"])
