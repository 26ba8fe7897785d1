"""CNN: a small convolutional classifier for single-channel images, and its arguments."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import Tensor, nn

from expkit import Args, BaseModel


class CNNArgs(Args):
    """Small convolutional network."""

    channels: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [16, 32],
        description="channels of each conv block (conv 3x3 -> ReLU -> 2x2 max-pool)")
    fc_size: int = Field(64, ge=1, le=1 << 20, description="width of the hidden fully connected layer")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the last layer")


class CNN(BaseModel):
    """Conv blocks that halve the image each, then global average pooling and two linear layers."""

    def __init__(self, args: CNNArgs, in_channels: int, num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for channels in args.channels:
            blocks += [nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(),
                       nn.MaxPool2d(2, ceil_mode=True)]
            width = channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, args.fc_size),
                                  nn.ReLU(), nn.Dropout(args.dropout),
                                  nn.Linear(args.fc_size, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits for a batch of (N, C, H, W) images."""
        out: Tensor = self.head(self.features(x))
        return out
