"""The gradient's health, watched at every optimizer step without a device sync: its norm (in
the history as `grad_norm`, the mean over the evaluation period's steps; per top-level module
as `grad_norm/<module>` with --grad_norm_by_module=true) and the first step at which it
became non-finite, with the first parameter (in the model's order) whose gradient did, so that
a diverged run says where it went wrong, not only that its loss is NaN.

Everything stays on the device until the period ends (when its metrics are read anyway): a
few small kernels a step.
"""

from __future__ import annotations

from typing import Any

import torch


class GradientWatch:
    """Norms of a model's gradients over the steps of one evaluation period, and the first
    non-finite one over the run."""

    def __init__(self, model: torch.nn.Module, device: torch.device, by_module: bool = False,
                 first_nonfinite: bool = True) -> None:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.device = device
        tops = [name.split(".", 1)[0] for name in self.names]
        self.modules = list(dict.fromkeys(tops)) if by_module else []
        self.group = torch.tensor([self.modules.index(t) for t in tops] if by_module else [],
                                  dtype=torch.long, device=device)
        self.track_first = first_nonfinite
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.first_norms = torch.zeros(len(self.params), device=device)
        self.reset()

    def reset(self, state: dict[str, Any] | None = None) -> None:
        """A new period: no steps yet (or where an interrupted one stood: `state()`'s output)."""
        zeros = torch.zeros((), dtype=torch.float64, device=self.device)
        self.total = zeros.clone() if state is None else state["total"].to(self.device)
        self.count = zeros.clone() if state is None else state["count"].to(self.device)
        self.per_module = (torch.zeros(len(self.modules), dtype=torch.float64, device=self.device)
                           if state is None else state["per_module"].to(self.device))

    def state(self) -> dict[str, Any]:
        """The period so far, and the first non-finite step, for a checkpoint."""
        return {"total": self.total, "count": self.count, "per_module": self.per_module,
                "first_step": self.first_step, "first_norms": self.first_norms}

    def load(self, state: dict[str, Any]) -> None:
        """Continue from `state()`'s output."""
        self.reset(state)
        self.first_step = state["first_step"].to(self.device)
        self.first_norms = state["first_norms"].to(self.device)

    def observe(self, step: int) -> None:
        """Optimizer step `step` (1-based) is about to apply the gradients now in `.grad`."""
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):  # a parameter this step did not reach counts as 0
            grads = [torch.zeros_like(p) if g is None else g
                     for p, g in zip(self.params, grads, strict=True)]
        norms = torch.stack(torch._foreach_norm(grads)).float()  # type: ignore[arg-type]
        total = torch.linalg.vector_norm(norms)
        finite = torch.isfinite(total)
        self.total += torch.where(finite, total, 0.0)
        self.count += finite
        if self.modules:
            squares = torch.zeros(len(self.modules), device=self.device).index_add_(
                0, self.group, norms**2)
            self.per_module += torch.where(finite, squares.sqrt(), 0.0)
        if not self.track_first:
            return
        first = (~finite) & (self.first_step < 0)
        self.first_step = torch.where(first, step, self.first_step)
        self.first_norms = torch.where(first, norms, self.first_norms)

    def period(self) -> dict[str, float]:
        """`grad_norm` (and `grad_norm/<module>`): the mean norm over the period's steps whose
        gradient was finite (one device sync); {} when no step had one."""
        count = float(self.count)
        if count == 0:
            return {}
        out = {"grad_norm": float(self.total) / count}
        for name, value in zip(self.modules, (self.per_module / count).tolist(), strict=True):
            out[f"grad_norm/{name}"] = value
        return out

    def first_nonfinite(self) -> tuple[int, str] | None:
        """(the optimizer step, the first parameter by name) where a gradient first became NaN
        or infinite; None while none has."""
        step = int(self.first_step)
        if step < 0:
            return None
        bad = (~torch.isfinite(self.first_norms)).nonzero()
        return step, self.names[int(bad[0])] if len(bad) else "?"
