"""breast_cancer: binary classification on scikit-learn's bundled breast-cancer data, with
torchmetrics' F1 and AUROC (the example of stateful metrics and of splits with more than x, y).

    python run.py --experiment_id=breast_cancer

Each split is a NamedSplit of three tensors: the standardized measurements `x`, the label `y`
(1 = malignant) and a per-example `weight` that balances the two classes (from the training
split's counts), which the loss uses. F1 and AUROC are torchmetrics objects: `step` hands them
its probabilities and labels, they keep their state over the whole split (on every rank under
torchrun) and compute once per evaluation; their `higher_is_better` gives their direction.
The best epoch is the one with the highest val_auroc.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from expkit import (
    MAX_EPOCHS,
    Args,
    BaseExperiment,
    BaseModel,
    DataInfo,
    DataSplits,
    Declared,
    ExperimentArgs,
    ExpkitError,
    HoldoutArgs,
    NamedSplit,
    Split,
    preprocess,
)

try:
    from torchmetrics.classification import BinaryAUROC, BinaryF1Score
except ImportError:  # the registry turns this into one line naming the experiment
    raise ImportError("breast_cancer computes F1 and AUROC with torchmetrics: "
                      "pip install torchmetrics (or expkit[metrics])") from None


class CancerModelArgs(Args):
    """The model's size."""

    hidden: int = Field(32, ge=1, le=1 << 16, description="units in the hidden layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout after the hidden layer")


class CancerArgs(ExperimentArgs):
    """The experiment's arguments: the common ones, plus the model's and the data's."""

    epochs: int = Field(30, ge=1, le=MAX_EPOCHS, description="number of training epochs")
    batch_size: int = Field(32, ge=1, le=1 << 24, description="training batch size")
    model: CancerModelArgs = Field(default_factory=CancerModelArgs)
    dataset: HoldoutArgs = Field(default_factory=lambda: HoldoutArgs(val_fraction=0.15))


class CancerModel(BaseModel):
    """An MLP from the 30 measurements to one logit (malignant vs benign)."""

    def __init__(self, args: CancerModelArgs, in_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, args.hidden), nn.ReLU(),
                                 nn.Dropout(args.dropout), nn.Linear(args.hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit per example."""
        return self.net(x).squeeze(1)  # type: ignore[no-any-return]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The probability that each example is malignant."""
        return torch.sigmoid(self(x))

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Class-balanced BCE (the loss); sums of loss and correct answers (-> loss, acc); and
        the (probabilities, labels) that the stateful F1 and AUROC update with."""
        x, y, weight = batch["x"], batch["y"], batch["weight"]
        logit = self(x)
        loss = F.binary_cross_entropy_with_logits(logit, y.float(), weight=weight)
        prob = torch.sigmoid(logit.detach())
        return loss, {"loss": loss.detach() * len(y), "acc": ((logit > 0) == (y == 1)).sum(),
                      "f1": (prob, y), "auroc": (prob, y)}


class BreastCancerExperiment(BaseExperiment[CancerArgs]):
    """Binary classification of breast-cancer measurements, F1 and AUROC (torchmetrics)."""

    args_class = CancerArgs
    metrics: ClassVar[Declared] = {"loss": "min", "acc": "max",
                                   "f1": BinaryF1Score(), "auroc": BinaryAUROC()}
    default_monitor = "val_loss"  # --monitor=val_auroc or val_f1 work too (torchmetrics)
    smoke_args = ("--epochs=2",)

    def build_data(self) -> DataSplits:
        """569 tumours, 30 measurements each, labelled malignant (1) or benign (0)."""
        try:
            from sklearn.datasets import load_breast_cancer
        except ImportError:
            raise ExpkitError("breast_cancer reads its data from scikit-learn's bundled sets; "
                              "pip install scikit-learn") from None
        x_np, target = load_breast_cancer(return_X_y=True)
        x = torch.tensor(x_np, dtype=torch.float32)
        y = 1 - torch.tensor(target, dtype=torch.long)  # scikit-learn's 0 is malignant
        train, val, test = self.args.dataset.split(Split(x, y))
        mean, std = train.x.mean(0), train.x.std(0)  # the training split's statistics only
        counts = torch.bincount(train.y, minlength=2).float()
        balance = len(train) / (2 * counts)  # each class weighs as much in the loss

        def named(split: Split) -> NamedSplit:
            return NamedSplit(x=(split.x - mean) / std, y=split.y, weight=balance[split.y])

        return DataSplits(2, (x.shape[1],), train=named(train),
                          val=None if val is None else named(val), test=named(test),
                          preprocess=[preprocess.normalize(mean.tolist(), std.tolist())])

    def build_model(self, data: DataInfo) -> CancerModel:
        """The MLP, sized for the measurements."""
        return CancerModel(self.args.model, data.input_size)
