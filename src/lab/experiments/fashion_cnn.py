"""Fashion-MNIST with a small CNN: the second example, one file plus one registry line.

    python run.py --experiment_id=fashion_cnn --epochs=3 --channels=16,32
"""

from __future__ import annotations

from pydantic import Field

from expkit import MAX_EPOCHS, BaseExperiment, DataInfo, DataSplits, ExperimentArgs
from lab.datasets.mnist import ImageData, ImageDataArgs
from lab.models.cnn import CNN, CNNArgs


class FashionCnnArgs(ExperimentArgs):
    """CNN on Fashion-MNIST."""

    epochs: int = Field(5, ge=1, le=MAX_EPOCHS, description="number of training epochs")
    model: CNNArgs = Field(default_factory=CNNArgs)
    dataset: ImageDataArgs = Field(
        default_factory=lambda: ImageDataArgs(name="fashion_mnist"))


class FashionCnnExperiment(BaseExperiment[FashionCnnArgs]):
    """Small CNN on Fashion-MNIST clothing images."""

    args_class = FashionCnnArgs
    smoke_args = ("--epochs=2", "--max_train_samples=200")

    def build_data(self) -> DataSplits:
        """Fashion-MNIST (or the chosen --dataset)."""
        return ImageData(self.args.dataset, self.machine.cache_dir).load()

    def build_model(self, data: DataInfo) -> CNN:
        """A CNN taking the images' channels to the number of classes."""
        return CNN(self.args.model, data.input_shape[0], data.classes())
