"""MNIST, Fashion-MNIST and scikit-learn's digits as in-memory image classification data."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from expkit import (
    AnySplit,
    BaseDataset,
    DataArgs,
    DataSplits,
    DownloadError,
    ExpkitError,
    Split,
    StreamSplit,
    atomic_write,
    download_verified,
    fits_in_memory,
    idx_shape,
    open_idx_memmap,
    preprocess,
    read_idx,
    split_indices,
    subset,
)

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


class ImageDataArgs(DataArgs):
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
    except DownloadError as e:
        raise ExpkitError(f"{args.name}: {e}", *_mirror_details(e), hint=_offline_ways(args.name, cache)) \
            from None


def _mirror_details(error: DownloadError) -> list[str]:
    """Each mirror's own error, shown only with EXPKIT_DEBUG=1 (a line each)."""
    return [f"  {failure}" for failure in error.failures] if os.environ.get("EXPKIT_DEBUG") else []


def _offline_ways(name: str, cache: Path) -> str:
    """What to do without network: a copy this machine already has, else where to put the files."""
    if name != "fashion_mnist" and all(_existing(SYSTEM_DIRS["fashion_mnist"][0], f) for f in FILES):
        return ("offline: Fashion-MNIST is installed here (Debian's dataset-fashion-mnist): use "
                "--dataset=fashion_mnist (or `make demo-offline`)")
    return (f"offline: put {', '.join(FILES)} in {cache} or pass --data_dir=FOLDER; "
            "or `apt-get install dataset-fashion-mnist` and use --dataset=fashion_mnist")


def _existing(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


class ImageData(BaseDataset):
    """Loads the chosen dataset into one pre-normalized float tensor per split."""

    args: ImageDataArgs

    def load(self) -> DataSplits:
        """Train (minus the validation fraction), validation and test splits, normalized.

        The raw arrays are split first and each part becomes float32 once, normalized in
        place, so the peak memory stays near the size of the float data itself.
        """
        if self.args.name == "digits":
            arrays, scale, files = _digits(), 16.0, []
        else:
            files = _find_or_fetch(self.args, self.cache_dir)
            shapes = [idx_shape(p) for p in files]
            if not fits_in_memory(4 * (int(np.prod(shapes[0])) + int(np.prod(shapes[2]))), self.args):
                return self._stream(files, shapes)
            arrays, scale = [read_idx(p) for p in files], 255.0
            for images, labels, path in ((arrays[0], arrays[1], files[0]),
                                         (arrays[2], arrays[3], files[2])):
                if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                    raise ExpkitError(f"{path}: expected N images of HxW with N labels, got "
                                      f"images {images.shape} and labels {labels.shape}")
        images, labels = arrays[0][:self.args.max_train_samples], arrays[1][:self.args.max_train_samples]
        mean, std = _chunked_mean_std(images, scale)
        keep, off = (i.numpy() for i in split_indices(len(images), self.args.val_fraction))

        def part(x: np.ndarray, y: np.ndarray) -> Split:
            tensor = torch.from_numpy(x.astype(np.float32))  # the one float copy of this part
            tensor.div_(scale).sub_(mean).div_(std)
            return Split(tensor.unsqueeze(1), torch.from_numpy(y.astype(np.int64)))

        train = part(images[keep], labels[keep])
        val = part(images[off], labels[off]) if len(off) else None
        test = part(arrays[2], arrays[3])
        num_classes = int(max(train.y.max(), test.y.max())) + 1
        return DataSplits(num_classes, tuple(train.x.shape[1:]), train=train, val=val, test=test,
                          files=files, preprocess=_steps(scale, mean, std, images.shape[1:]))

    def _stream(self, files: list[Path], shapes: list[tuple[int, ...]]) -> DataSplits:
        """The same splits, read from memory-mapped, uncompressed IDX files item by item."""
        raw = [_uncompressed(p, self.cache_dir / self.args.name / "raw") for p in files]
        images = open_idx_memmap(raw[0])
        limit = self.args.max_train_samples or len(images)
        mean, std = _chunked_mean_std(images[:limit], 255.0)
        workers = self.args.num_workers
        train_all = StreamSplit(IdxItems(raw[0], raw[1], mean, std), workers)
        test = StreamSplit(IdxItems(raw[2], raw[3], mean, std), workers)
        keep, off = split_indices(min(limit, len(images)), self.args.val_fraction)
        val: AnySplit | None = subset(train_all, off.tolist()) if len(off) else None
        labels = open_idx_memmap(raw[1])
        num_classes = int(max(labels.max(), open_idx_memmap(raw[3]).max())) + 1
        return DataSplits(num_classes, (1, *shapes[0][1:]), train=subset(train_all, keep.tolist()),
                          val=val, test=test, files=files, streamed=True,
                          preprocess=_steps(255.0, mean, std, shapes[0][1:]))


class IdxItems(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(image, label) items of uncompressed IDX files, normalized on the fly (memory-mapped)."""

    def __init__(self, images: Path, labels: Path, mean: float, std: float) -> None:
        self.paths, self.mean, self.std = (images, labels), np.float32(mean), np.float32(std)
        self.length = idx_shape(images)[0]
        self._maps: tuple[np.ndarray, np.ndarray] | None = None  # opened lazily, per worker

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._maps is None:
            self._maps = (open_idx_memmap(self.paths[0]), open_idx_memmap(self.paths[1]))
        image = (self._maps[0][i].astype(np.float32) / 255 - self.mean) / self.std
        return torch.from_numpy(image).unsqueeze(0), torch.tensor(int(self._maps[1][i]))


def _uncompressed(path: Path, folder: Path) -> Path:
    """`path` itself if not gzipped, else a decompressed copy in `folder` (made once, atomically)."""
    if path.suffix != ".gz":
        return path
    target = folder / path.name.removesuffix(".gz")
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)

        def copy(out: Any) -> None:
            with gzip.open(path, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)

        atomic_write(target, copy)
    return target


def _steps(scale: float, mean: float, std: float, image: tuple[int, ...]) -> list[dict[str, Any]]:
    """How a raw image (pixel values 0..scale) becomes the model's input, for an export."""
    return [preprocess.scale(scale), preprocess.normalize(mean, std),
            preprocess.reshape((1, *image))]


def _chunked_mean_std(images: np.ndarray, scale: float, chunk: int = 4096) -> tuple[float, float]:
    """Mean and std of the pixels divided by `scale`, one chunk in memory at a time."""
    total = total_sq = 0.0
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].astype(np.float64) / scale
        total += block.sum()
        total_sq += np.square(block).sum()
    count = images.size
    mean = total / count
    return mean, max((total_sq / count - mean**2) ** 0.5, 1e-8)


def _digits() -> list[np.ndarray]:
    """scikit-learn's 8x8 digits as [train images, train labels, test images, test labels]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ExpkitError("--dataset=digits needs scikit-learn: pip install 'expkit[digits]'") \
            from None
    bunch = load_digits()
    train, test = split_indices(len(bunch.images), 0.2, seed=0)
    return [bunch.images[train], bunch.target[train], bunch.images[test], bunch.target[test]]
