"""MNIST: an MLP classifying handwritten digits (or Fashion-MNIST / digits via --dataset).

    python run.py --experiment_id=mnist --use_cuda=false --hidden_sizes="[64]"
"""

from __future__ import annotations

from pydantic import Field

from expkit import MAX_EPOCHS, BaseExperiment, DataInfo, DataSplits, ExperimentArgs
from lab.datasets.mnist import ImageData, ImageDataArgs
from lab.models.mlp import MLP, MLPArgs


class MnistArgs(ExperimentArgs):
    """MLP on MNIST-family images."""

    epochs: int = Field(5, ge=1, le=MAX_EPOCHS, description="number of training epochs")
    model: MLPArgs = Field(default_factory=MLPArgs)
    dataset: ImageDataArgs = Field(default_factory=ImageDataArgs)


class MnistExperiment(BaseExperiment[MnistArgs]):
    """MLP on MNIST handwritten digits (--dataset=fashion_mnist|digits also work)."""

    args_class = MnistArgs
    smoke_args = ("--epochs=2", "--max_train_samples=200")

    def build_data(self) -> DataSplits:
        """MNIST (or the chosen --dataset), cached under the machine's cache_dir."""
        return ImageData(self.args.dataset, self.machine.cache_dir).load()

    def build_model(self, data: DataInfo) -> MLP:
        """An MLP from the flattened image size to the number of classes."""
        return MLP(self.args.model, data.input_size, data.classes())
