"""The IDX file format of MNIST and Fashion-MNIST: read and write, gzipped or not."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

from expkit.errors import ExpkitError

_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (`.gz` is decompressed); a clear error if it is not valid IDX."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ExpkitError(f"{path}: cannot read IDX file: {e}; delete it to download it again") \
            from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ExpkitError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'});"
                          " delete it to download it again")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ExpkitError(f"{path}: IDX header is truncated; delete it to download it again")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[data[2]]
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ExpkitError(f"{path}: IDX file has {len(data)} bytes, its header {shape} says "
                          f"{expected}; it is truncated or corrupt, delete it to download it again")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def idx_shape(path: Path) -> tuple[int, ...]:
    """The array shape an IDX file declares, read from its header alone."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _DTYPES:
                raise ExpkitError(f"{path}: not an IDX file (bad magic number {head.hex() or 'empty'})")
            return struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
    except (OSError, EOFError, struct.error) as e:
        raise ExpkitError(f"{path}: cannot read IDX header: {e}") from None


def open_idx_memmap(path: Path) -> np.ndarray:
    """A read-only memory map of an uncompressed IDX file (for data larger than memory)."""
    shape = idx_shape(path)
    with open(path, "rb") as f:
        dtype = _DTYPES[f.read(3)[2]]
    return np.memmap(path, dtype=dtype, mode="r", offset=4 + 4 * len(shape), shape=shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8 or int8) as an IDX file, gzipped when `path` ends in .gz."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
