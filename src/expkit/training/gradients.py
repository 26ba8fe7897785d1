"""The gradient's health, watched at every optimizer step without a device sync: its norm (in
the history as `grad_norm`, the mean over the evaluation period's steps; per top-level module
as `grad_norm/<module>` with --grad_norm_by_module=true) and the first step at which it
became non-finite, with the first parameter (in the model's order) whose gradient did, so that
a diverged run says where it went wrong, not only that its loss is NaN.

Everything stays on the device until the period ends (when its metrics are read anyway): one
multi-tensor kernel a step, and a few more every CHUNK steps.
"""

from __future__ import annotations

from typing import Any

import torch

#: steps whose norms are reduced together
CHUNK = 256


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
        self.pending: list[torch.Tensor] = []  # the per-parameter norms of steps not yet reduced
        self.pending_from = 0  # the step the first of them belongs to

    def state(self) -> dict[str, Any]:
        """The period so far, and the first non-finite step, for a checkpoint."""
        self._reduce()
        return {"total": self.total, "count": self.count, "per_module": self.per_module,
                "first_step": self.first_step, "first_norms": self.first_norms}

    def load(self, state: dict[str, Any]) -> None:
        """Continue from `state()`'s output."""
        self.reset(state)
        self.first_step = state["first_step"].to(self.device)
        self.first_norms = state["first_norms"].to(self.device)

    def observe(self, step: int) -> None:
        """Optimizer step `step` (1-based) is about to apply the gradients now in `.grad`: one
        multi-tensor kernel (each parameter's norm), kept on the device; every CHUNK steps
        they are reduced together."""
        if not self.params:
            return
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):  # a parameter this step did not reach counts as 0
            grads = [torch.zeros_like(p) if g is None else g
                     for p, g in zip(self.params, grads, strict=True)]
        if not self.pending:
            self.pending_from = step
        self.pending.extend(torch._foreach_norm(grads))  # type: ignore[arg-type]
        if len(self.pending) >= CHUNK * len(self.params):
            self._reduce()

    def _reduce(self) -> None:
        """Fold the pending steps' norms into the period's sums and the first non-finite step
        (a few kernels for CHUNK steps, no sync)."""
        if not self.pending:
            return
        norms = torch.stack(self.pending).float().view(-1, len(self.params))  # (steps, parameters)
        self.pending = []
        totals = torch.linalg.vector_norm(norms, dim=1)
        finite = torch.isfinite(totals)
        # summed in float64, where float32 norms add exactly: the same sums however the
        # steps are chunked (a period resumed mid-way is reduced at its interruption)
        self.total += torch.where(finite, totals, 0.0).double().sum()
        self.count += finite.sum()
        if self.modules:
            squares = torch.zeros(len(norms), len(self.modules), device=self.device).index_add_(
                1, self.group, norms**2)
            self.per_module += torch.where(finite[:, None], squares.sqrt(), 0.0).double().sum(0)
        if self.track_first:
            bad = ~finite
            first = bad.any() & (self.first_step < 0)
            at = bad.int().argmax()
            self.first_step = torch.where(first, self.pending_from + at, self.first_step)
            self.first_norms = torch.where(first, norms[at], self.first_norms)

    def period(self) -> dict[str, float]:
        """`grad_norm` (and `grad_norm/<module>`): the mean norm over the period's steps whose
        gradient was finite (one device sync); {} when no step had one."""
        self._reduce()
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
        self._reduce()
        step = int(self.first_step)
        if step < 0:
            return None
        bad = (~torch.isfinite(self.first_norms)).nonzero()
        return step, self.names[int(bad[0])] if len(bad) else "?"


def divergence(loss: float, at: str, watch: GradientWatch | None) -> str:
    """Why a run diverged, for its stop reason: the loss, where, and (when `watch` saw it) the
    optimizer step and the parameter whose gradient first became non-finite."""
    first = watch.first_nonfinite() if watch is not None else None
    where = (f"; its gradient first became non-finite at optimizer step {first[0]}, in "
             f"{first[1]}" if first else "")
    return f"the training loss became {loss} in {at}{where}; lower --lr or set --grad_clip_norm"
