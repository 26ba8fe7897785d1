"""ResNet: a small residual CNN (basic blocks, batch norm) for small images, and its arguments."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import Tensor, nn

from expkit import Args, BaseModel


class ResNetArgs(Args):
    """Small residual network: a stem, then one stage per entry of --channels."""

    channels: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [32, 64, 128],
        description="channels of each stage; every stage after the first halves the image")
    blocks: int = Field(1, ge=1, le=64, description="residual blocks per stage")
    first_stride: int = Field(1, ge=1, le=4, description="stride of the first stage (2 halves "
                              "the image early: wider stages for the same time)")


class _Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (projected when the shape changes), then ReLU."""

    def __init__(self, width: int, channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, channels, 3, stride, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels))
        self.skip = (nn.Identity() if stride == 1 and width == channels else nn.Sequential(
            nn.Conv2d(width, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = nn.functional.relu(self.body(x) + self.skip(x))
        return out


class ResNet(BaseModel):
    """Stem conv, residual stages (stride 2 after the first), global average pooling, linear."""

    def __init__(self, args: ResNetArgs, in_channels: int, num_classes: int) -> None:
        super().__init__()
        width = args.channels[0]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        for stage, channels in enumerate(args.channels):
            for block in range(args.blocks):
                stride = (2 if stage else args.first_stride) if not block else 1
                layers.append(_Block(width, channels, stride))
                width = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits for a batch of (N, C, H, W) images."""
        out: Tensor = self.head(self.features(x))
        return out
