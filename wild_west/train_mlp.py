"""The lab's dataset and MLP, trained by a plain ten-line loop (no expkit loop, no run directory).

    python wild_west/train_mlp.py --dataset fashion_mnist --epochs 2 --hidden_sizes 64
"""

import argparse

import torch
import torch.nn.functional as F

from expkit import load_machine_config
from lab.datasets.mnist import ImageData, ImageDataArgs
from lab.models.mlp import MLP, MLPArgs

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist", "digits"])
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--hidden_sizes", type=int, nargs="+", default=[64])
parser.add_argument("--lr", type=float, default=1e-3)
ns = parser.parse_args()

torch.manual_seed(0)
cache_dir = load_machine_config().cache_dir  # the same cache the framework uses
data = ImageData(ImageDataArgs(name=ns.dataset), cache_dir).load()
model = MLP(MLPArgs(hidden_sizes=ns.hidden_sizes), data.input_size, data.classes())
optimizer = torch.optim.Adam(model.parameters(), lr=ns.lr)
assert data.test is not None

for epoch in range(1, ns.epochs + 1):
    model.train()
    for x, y in data.train.batches(64, torch.Generator().manual_seed(epoch)):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()
    print(f"epoch {epoch}: last batch loss {loss.item():.4f}, test accuracy {accuracy:.4f}")
