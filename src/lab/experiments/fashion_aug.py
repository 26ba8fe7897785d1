"""Fashion-MNIST with a small ResNet and augmentation on the device (random crop, flip).

    python run.py --experiment_id=fashion_aug

Augmentation is batched tensor work on the in-memory fast path (expkit.data.augment),
seeded from the trainer's generator: a resume or a rerun sees the same augmented batches.
At each evaluation, a grid of augmented training images is saved as an artifact.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from expkit import (
    MAX_EPOCHS,
    Args,
    BaseExperiment,
    DataInfo,
    DataSplits,
    ExperimentArgs,
    OptimizerArgs,
    SchedulerArgs,
    TrainerArgs,
    augment,
)
from lab.datasets.mnist import ImageData, ImageDataArgs
from lab.models.resnet import ResNet, ResNetArgs


class AugmentArgs(Args):
    """Augmentation of the training images (never of validation or test)."""

    crop_padding: int = Field(2, ge=0, le=64, description="random crop: shift by up to this many "
                              "pixels (zero padding); 0 = off")
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    noise_std: float = Field(0.0, ge=0, description="std of added Gaussian noise; 0 = off")

    def transforms(self) -> list[augment.InputTransform]:
        """The batched transforms these args ask for, in order."""
        out = [augment.random_crop(self.crop_padding)] if self.crop_padding else []
        out += [augment.hflip(self.hflip)] if self.hflip else []
        return out + ([augment.noise(self.noise_std)] if self.noise_std else [])


class FashionAugArgs(ExperimentArgs):
    """Small ResNet on Fashion-MNIST with augmentation."""

    epochs: int = Field(8, ge=1, le=MAX_EPOCHS, description="number of training epochs")
    batch_size: int = Field(128, ge=1, le=1 << 24, description="training batch size")
    optimizer: OptimizerArgs = Field(
        default_factory=lambda: OptimizerArgs(name="adamw", lr=3e-3, weight_decay=5e-4))
    scheduler: SchedulerArgs = Field(default_factory=lambda: SchedulerArgs(name="onecycle"))
    trainer: TrainerArgs = Field(default_factory=lambda: TrainerArgs(channels_last=True))
    model: ResNetArgs = Field(default_factory=lambda: ResNetArgs(channels=[32, 64, 128],
                                                                 first_stride=2))
    dataset: ImageDataArgs = Field(default_factory=lambda: ImageDataArgs(name="fashion_mnist"))
    augment: AugmentArgs = Field(default_factory=AugmentArgs)


class FashionAugExperiment(BaseExperiment[FashionAugArgs]):
    """Small ResNet on Fashion-MNIST, trained on randomly cropped and flipped images."""

    args_class = FashionAugArgs
    smoke_args = ("--epochs=1", "--max_train_samples=256", "--channels=[8,16]")

    def build_data(self) -> DataSplits:
        """Fashion-MNIST in memory, with the batched augmentation of the training batches."""
        data = ImageData(self.args.dataset, self.machine.cache_dir).load()
        transforms = self.args.augment.transforms()
        data.augment = augment.inputs(*transforms) if transforms else None
        return data

    def build_model(self, data: DataInfo) -> ResNet:
        """A ResNet taking the images' channels to the number of classes."""
        return ResNet(self.args.model, data.input_shape[0], data.classes())

    def evaluation_artifacts(self, trainer: Any) -> dict[str, str | torch.Tensor]:
        """A 4 x 8 grid of the first training images as this evaluation's augmentation draws
        them (a generator of its own: the training's random streams are left alone)."""
        if trainer.augment is None or trainer.released:
            return {}
        images = trainer.train_split.x[:32].float()
        generator = torch.Generator(images.device).manual_seed(trainer.epoch)
        batch = trainer.augment((images, trainer.train_split.y[:32]), generator)
        return {"augmented": _grid(batch[0], columns=8)}


def _grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """Images (N, C, H, W) tiled into one (C, rows * H, columns * W) image scaled to [0, 1]."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = torch.zeros(rows * columns, c, h, w, device=images.device)
    canvas[:n] = images
    grid = canvas.view(rows, columns, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, columns * w)
    low, high = grid.min(), grid.max()
    return ((grid - low) / (high - low).clamp_min(1e-8)).cpu()
