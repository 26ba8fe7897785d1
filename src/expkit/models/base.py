"""BaseModel: a torch nn.Module plus `step`, the one method the training loop calls per batch."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class BaseModel(nn.Module):
    """An nn.Module the loop can train: implement `forward`; `step` defaults to classification.

    `step(batch)` gets what the split yields: `(x, y)` from a Split, a dict of named tensors
    from a NamedSplit. It returns the loss to backpropagate (a batch mean) and a dict of metric
    *sums* over the batch, as tensors; the loop adds the sums up on the device and turns them
    into the declared metrics once per epoch, so nothing per step forces a device sync
    (.item()). A stateful metric (a torchmetrics Metric) gets a tuple instead: the arguments
    of its `update`. The names become `train_<name>`, `val_<name>` and `test_<name>`.
    """

    def step(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Cross-entropy loss and the batch's summed loss and correct count (-> loss, acc)."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.detach() * y.shape[0], "acc": (logits.argmax(1) == y).sum()}
