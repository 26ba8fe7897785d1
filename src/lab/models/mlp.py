"""MLP: a multi-layer perceptron classifier, and its arguments."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import Tensor, nn

from expkit import Args, BaseModel

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLPArgs(Args):
    """Multi-layer perceptron."""

    hidden_sizes: list[Annotated[int, Field(ge=1, le=1 << 20)]] = Field(
        default_factory=lambda: [128], description="widths of the hidden layers, e.g. [128,64]")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field("relu", description="activation")


class MLP(BaseModel):
    """Flatten -> [Linear -> activation -> dropout] per hidden size -> Linear to the classes."""

    def __init__(self, args: MLPArgs, in_features: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for hidden in args.hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[args.activation]()]
            if args.dropout:
                layers.append(nn.Dropout(args.dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits for a batch of inputs of any shape (flattened per example)."""
        out: Tensor = self.net(x)
        return out
