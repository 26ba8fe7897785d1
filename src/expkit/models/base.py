"""BaseModel: a torch nn.Module plus `step`, the one method the training loop calls per batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BaseModel(nn.Module):
    """An nn.Module the loop can train: implement `forward`; `step` defaults to classification.

    `step(batch)` returns the loss to backpropagate (a batch mean) and a dict of metric *sums*
    over the batch, as tensors. The loop adds the sums up on the device and divides by the
    number of examples once per epoch, so nothing per step forces a device sync (.item()).
    The metric names become `train_<name>`, `val_<name>` and `test_<name>`.
    """

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy loss and the batch's summed loss and correct count (-> loss, acc)."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.detach() * y.shape[0], "acc": (logits.argmax(1) == y).sum()}
