"""Fashion-MNIST as normalized tensors for the baseline scripts, without expkit (a fair baseline).

Split like expkit does: 6,000 validation examples by a seeded permutation.
"""

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch


def _read(folder: Path, name: str) -> np.ndarray:
    with gzip.open(folder / name) as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(folder: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train/val/test (images, labels), images normalized with the training statistics."""
    root = Path(folder)
    x = torch.from_numpy(_read(root, "train-images-idx3-ubyte.gz").astype(np.float32) / 255)
    y = torch.from_numpy(_read(root, "train-labels-idx1-ubyte.gz").astype(np.int64))
    xt = torch.from_numpy(_read(root, "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255)
    yt = torch.from_numpy(_read(root, "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    mean, std = x.mean(), x.std()
    x, xt = (x - mean) / std, (xt - mean) / std
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return {"train": (x[order[6000:]], y[order[6000:]]), "val": (x[order[:6000]], y[order[:6000]]),
            "test": (xt, yt)}


def parse_args(doc: str) -> argparse.Namespace:
    """The baseline scripts' flags: --epochs, --batch_size, --data (the IDX folder)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    return parser.parse_args()
