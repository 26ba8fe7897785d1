"""MNIST, Fashion-MNIST and scikit-learn's digits as in-memory image classification data."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from expkit.args import Args
from expkit.data.base import BaseDataset, DataSplits, Split, split_off
from expkit.data.download import download_verified
from expkit.data.idx import read_idx
from expkit.errors import ExpkitError

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

#: where each dataset is downloaded from, and the SHA-256 of each upstream file
SOURCES: dict[str, tuple[list[str], dict[str, str]]] = {
    "mnist": (
        ["https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/",
         "http://yann.lecun.com/exdb/mnist/"],
        dict(zip(FILES, (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"), strict=True))),
    "fashion_mnist": (
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        dict(zip(FILES, (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"), strict=True))),
}

#: folders other software installs the files into (Debian's dataset-fashion-mnist)
SYSTEM_DIRS = {"fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")]}


class ImageDataArgs(Args):
    """Image classification data: MNIST, Fashion-MNIST or digits."""

    name: Literal["mnist", "fashion_mnist", "digits"] = Field(
        "mnist", description="dataset", json_schema_extra={"flag": "dataset"})
    val_fraction: float = Field(0.1, ge=0, lt=1,
                                description="fraction of the training set held out for validation")
    data_dir: Path | None = Field(None, description="folder with the IDX files; auto = the cache "
                                  "dir, then system folders, then download")
    download: bool = Field(True, description="download missing files (verified by SHA-256)")
    max_train_samples: int | None = Field(None, ge=1, description="use only the first N training "
                                          "examples (quick trials); auto = all")


def _find_or_fetch(args: ImageDataArgs, cache_dir: Path) -> list[Path]:
    cache = cache_dir / args.name
    folders = [args.data_dir] if args.data_dir else [cache, *SYSTEM_DIRS.get(args.name, [])]
    for folder in folders:
        found = [_existing(folder, name) for name in FILES]
        if all(found):
            return [p for p in found if p]
    if args.data_dir:
        missing = [n for n in FILES if not _existing(args.data_dir, n)]
        raise ExpkitError(f"--data_dir: {args.data_dir} lacks {', '.join(missing)} "
                          "(gzipped or not); place the IDX files there")
    if not args.download:
        raise ExpkitError(f"{args.name}: files not found in {', '.join(map(str, folders))}; place "
                          f"{', '.join(FILES)} in {cache} (or pass --data_dir), or use "
                          "--download=true")
    mirrors, checksums = SOURCES[args.name]
    try:
        return [_existing(cache, name) or download_verified(name, mirrors, checksums[name], cache)
                for name in FILES]
    except ExpkitError as e:
        raise ExpkitError(f"{args.name}: {e}; without network, place {', '.join(FILES)} in "
                          f"{cache} (or pass --data_dir)") from None


def _existing(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _normalized(images: np.ndarray, scale: float) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / scale)
    return x.unsqueeze(1) if x.dim() == 3 else x  # (N, 1, H, W)


class ImageData(BaseDataset):
    """Loads the chosen dataset into one pre-normalized float tensor per split."""

    args: ImageDataArgs

    def load(self) -> DataSplits:
        """Train (minus the validation fraction), validation and test splits, normalized."""
        if self.args.name == "digits":
            train, test, files = _digits()
        else:
            files = _find_or_fetch(self.args, self.cache_dir)
            arrays = [read_idx(p) for p in files]
            for images, labels, path in ((arrays[0], arrays[1], files[0]),
                                         (arrays[2], arrays[3], files[2])):
                if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                    raise ExpkitError(f"{path}: expected N images of HxW with N labels, got "
                                      f"images {images.shape} and labels {labels.shape}")
            train = Split(_normalized(arrays[0], 255.0), torch.from_numpy(arrays[1].astype(np.int64)))
            test = Split(_normalized(arrays[2], 255.0), torch.from_numpy(arrays[3].astype(np.int64)))
        if self.args.max_train_samples:
            n = self.args.max_train_samples
            train = Split(train.x[:n], train.y[:n])
        mean, std = train.x.mean(), train.x.std().clamp_min(1e-8)
        for split in (train, test):
            split.x.sub_(mean).div_(std)  # in place: no second copy of the data
        train, val = split_off(train, self.args.val_fraction)
        num_classes = int(max(train.y.max(), test.y.max())) + 1
        return DataSplits(num_classes, tuple(train.x.shape[1:]), train=train, val=val, test=test,
                          files=files)


def _digits() -> tuple[Split, Split, list[Path]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ExpkitError("--dataset=digits needs scikit-learn: pip install 'expkit[digits]'") \
            from None
    bunch = load_digits()
    everything = Split(_normalized(bunch.images, 16.0), torch.from_numpy(bunch.target.astype(np.int64)))
    train, test = split_off(everything, 0.2, seed=0)
    assert test is not None
    return train, test, []
