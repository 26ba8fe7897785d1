"""diabetes: regression on scikit-learn's bundled diabetes data with an MLP (the regression example).

    python run.py --experiment_id=diabetes

Written by `new diabetes --template=regression`; only this docstring was edited. Inputs and
targets are standardized with the training split's statistics; the target's mean and std are
the dataset's *state*:
they reach `build_model`, are saved in every checkpoint, and let `expkit.load_run` rebuild a
model that predicts in target units without the data. The best epoch is the one with the
highest val_r2 (the direction r2 declares), R² computed over the whole split.
"""

from __future__ import annotations

from typing import ClassVar, Literal

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
    Split,
    preprocess,
    r2,
)

EPOCHS = 100
HIDDEN = 64


class DiabetesModelArgs(Args):
    """The model. Every field is a flag: --model=linear, --hidden=128, --dropout=0.1."""

    # a part's `name` is its flag: --model=linear trains the baseline every result is held to
    name: Literal["mlp", "linear"] = Field("mlp", description="mlp: two hidden layers; linear: "
                                           "one linear layer, the baseline")
    hidden: int = Field(HIDDEN, ge=1, le=1 << 16, description="mlp: units in each hidden layer")
    dropout: float = Field(0.0, ge=0, lt=1, description="mlp: dropout after each hidden layer")


class DiabetesArgs(ExperimentArgs):
    """The experiment's arguments: the common ones, plus the model's and the data's."""

    epochs: int = Field(EPOCHS, ge=1, le=MAX_EPOCHS, description="number of training epochs")
    batch_size: int = Field(32, ge=1, le=1 << 24, description="training batch size")
    model: DiabetesModelArgs = Field(default_factory=DiabetesModelArgs)
    # --val_fraction, --test_fraction: held out the same way every run (seeded permutations)
    dataset: HoldoutArgs = Field(default_factory=HoldoutArgs)


def _sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ExpkitError("diabetes reads its data from scikit-learn's bundled sets; "
                          "pip install scikit-learn") from None


class DiabetesMLP(BaseModel):
    """An MLP: input features -> hidden -> hidden -> outputs (--model=linear: features ->
    outputs, one linear layer)."""

    def __init__(self, args: DiabetesModelArgs, in_features: int, outputs: int) -> None:
        super().__init__()
        if args.name == "linear":
            self.net: nn.Module = nn.Linear(in_features, outputs)
        else:
            self.net = nn.Sequential(
                nn.Linear(in_features, args.hidden), nn.ReLU(), nn.Dropout(args.dropout),
                nn.Linear(args.hidden, args.hidden), nn.ReLU(), nn.Dropout(args.dropout),
                nn.Linear(args.hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for a batch of inputs (batch, features)."""
        return self.net(x)  # type: ignore[no-any-return]


class DiabetesModel(DiabetesMLP):
    """Predicts the target in its own units from standardized inputs."""

    def __init__(self, args: DiabetesModelArgs, in_features: int, y_mean: float, y_std: float
                 ) -> None:
        super().__init__(args, in_features, 1)
        self.y_mean, self.y_std = y_mean, y_std

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in target units, one per example."""
        standardized: torch.Tensor = self(x)
        return standardized.squeeze(1) * self.y_std + self.y_mean

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MSE on the standardized target (the loss), and per-batch sums in target units: of
        absolute and squared errors (-> mae, mse: the loop divides by the number of examples),
        and of y and y squared, from which r2 is computed over the whole split."""
        x, y = batch
        standardized = self(x).squeeze(1)
        loss = F.mse_loss(standardized, (y - self.y_mean) / self.y_std)
        error = (standardized.detach() * self.y_std + self.y_mean) - y
        return loss, {"loss": loss.detach() * len(y), "mae": error.abs().sum(),
                      "mse": (error**2).sum(), "y": y.sum(), "y2": (y**2).sum()}


class DiabetesExperiment(BaseExperiment[DiabetesArgs]):
    """Regression of one number from a row of measurements: an MLP, or a linear baseline."""

    args_class = DiabetesArgs
    # what `step` returns, and whether lower ("min") or higher ("max") is better
    # r2 is not a per-example mean: a Metric computes it from the whole split's sums
    metrics: ClassVar[Declared] = {"loss": "min", "mae": "min", "mse": "min",
                                   "r2": r2(squared_error="mse")}
    default_monitor = "val_r2"  # picks the best epoch (--monitor to choose another)
    smoke_args = ("--epochs=2",)  # the quick run `make test` does of every experiment

    def build_data(self) -> DataSplits:
        """442 patients, 10 measurements each; the target is disease progression a year on."""
        _sklearn()
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True, scaled=False)
        train, val, test = self.args.dataset.split(
            Split(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)))
        mean, std = train.x.mean(0), train.x.std(0)  # the training split's statistics only

        def scaled(split: Split) -> Split:
            return Split((split.x - mean) / std, split.y)

        state = {"y_mean": float(train.y.mean()), "y_std": float(train.y.std())}
        # how a raw input becomes the model's input: an export writes it for whoever uses it
        return DataSplits(None, (x.shape[1],), state, train=scaled(train),
                          val=None if val is None else scaled(val), test=scaled(test),
                          preprocess=[preprocess.normalize(mean.tolist(), std.tolist())])

    def build_model(self, data: DataInfo) -> DiabetesModel:
        """An MLP (or a linear layer) from the measurements to one number, in target units."""
        return DiabetesModel(self.args.model, data.input_size, data.state["y_mean"],
                             data.state["y_std"])
