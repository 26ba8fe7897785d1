"""Data: IDX files, verified downloads from a real HTTP server on loopback, batching."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import IDX_FILES, write_idx_set
from expkit.data.base import Split
from expkit.data.download import DownloadError, download_verified
from expkit.data.idx import read_idx, write_idx
from expkit.errors import ExpkitError
from lab.datasets import mnist as mnist_data


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a fresh folder: (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_idx_round_trip(tmp_path: Path, name: str) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    assert np.array_equal(read_idx(tmp_path / name), array)


def test_idx_truncated_and_wrong_magic_are_clear_errors(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.gz", np.zeros((10, 4, 4), dtype=np.uint8))
    data = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(ExpkitError, match="truncated or corrupt"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(ExpkitError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ExpkitError, match="cannot read IDX file"):
        read_idx(tmp_path / "bad.gz")


def test_download_verifies_and_falls_back_to_the_next_mirror(server: tuple[str, Path],
                                                           tmp_path: Path) -> None:
    url, root = server
    (root / "good").mkdir()
    source = write_idx_set(root / "good")[0]
    dest = tmp_path / "cache"
    got = download_verified(source.name, [f"{url}/missing", f"{url}/good"], sha256(source), dest)
    assert got == dest / source.name and got.read_bytes() == source.read_bytes()


def test_corrupt_download_is_detected_deleted_and_reported(server: tuple[str, Path],
                                                           tmp_path: Path) -> None:
    url, root = server
    (root / "f.gz").write_bytes(b"corrupted bytes")
    dest = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"could not download f.gz \(1 mirror tried") as info:
        download_verified("f.gz", [url], "0" * 64, dest)
    assert not info.value.offline
    assert "checksum mismatch" in info.value.failures[0] and "file deleted" in info.value.failures[0]
    assert not dest.exists()  # no file, no .part, no empty folder left behind


@pytest.mark.parametrize("debug", ["", "1"])
def test_offline_download_is_one_short_line_and_the_ways_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, debug: str) -> None:
    """No mirror reachable: one line (what failed, how many mirrors), then what to do offline;
    each mirror's error only with EXPKIT_DEBUG=1."""
    with socket.socket() as closed:  # a port nothing listens on: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    mirrors = [f"http://127.0.0.1:{port}/a/", f"http://127.0.0.1:{port}/b/"]
    monkeypatch.setitem(mnist_data.SOURCES, "mnist", (mirrors, dict.fromkeys(IDX_FILES, "0" * 64)))
    monkeypatch.setenv("EXPKIT_DEBUG", debug)
    with pytest.raises(ExpkitError) as info:
        mnist_data.ImageData(mnist_data.ImageDataArgs(name="mnist"), tmp_path / "cache").load()
    first, *details = info.value.lines
    assert first == ("mnist: could not download train-images-idx3-ubyte.gz (2 mirrors tried; "
                     "no network?)")
    assert len(details) == (2 if debug else 0)
    assert all("127.0.0.1" in line and "refused" in line.lower() for line in details), details
    hint = info.value.hint or ""
    assert "offline:" in hint and "--dataset=fashion_mnist" in hint
    assert str(tmp_path / "cache" / "mnist") in hint or "dataset-fashion-mnist" in hint
    assert not (tmp_path / "cache").exists(), "a failed download leaves no empty folder behind"


def test_dataset_downloads_missing_files_then_loads(server: tuple[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = server
    files = write_idx_set(root, n_train=300, n_test=50)
    monkeypatch.setitem(mnist_data.SOURCES, "mnist", ([url], {p.name: sha256(p) for p in files}))
    args = mnist_data.ImageDataArgs(name="mnist", val_fraction=0.2)
    data = mnist_data.ImageData(args, tmp_path / "cache").load()
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(IDX_FILES)
    assert (len(data.train), len(data.val or []), len(data.test or [])) == (240, 60, 50)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert abs(float(data.train.x.mean())) < 0.05  # normalized with the training statistics


def test_shuffled_batches_cover_every_example_once() -> None:
    split = Split(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    g = torch.Generator().manual_seed(0)
    batches = list(split.batches(3, g))
    assert [len(y) for _, y in batches] == [3, 3, 3, 1]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert all(torch.equal(x.squeeze(1).long(), y) for x, y in batches)  # pairs stay together


@pytest.mark.parametrize("in_memory", [True, False])
def test_the_stated_preprocessing_turns_raw_images_into_the_model_inputs(
        tmp_path: Path, in_memory: bool) -> None:
    """DataSplits.preprocess (what an export writes) applied to the raw test images gives the
    test split's inputs, held in memory or streamed from disk; the constants are the training
    split's mean and std of pixels / 255 (recomputed here in float64)."""
    from expkit.data import preprocess

    files = write_idx_set(tmp_path / "cache" / "mnist", n_train=300, n_test=50)
    args = mnist_data.ImageDataArgs(name="mnist", val_fraction=0.2, in_memory=in_memory)
    data = mnist_data.ImageData(args, tmp_path / "cache").load()
    assert data.streamed is not in_memory
    raw = read_idx(files[2])
    test = torch.cat([x for x, _ in data.test.batches(len(raw))])
    assert torch.equal(torch.from_numpy(preprocess.apply(data.preprocess, raw)), test)
    pixels = read_idx(files[0]).astype(np.float64) / 255
    assert data.preprocess[1]["mean"] == pytest.approx(pixels.mean(), rel=1e-12)
    assert data.preprocess[1]["std"] == pytest.approx(pixels.std(), rel=1e-9)
    assert preprocess.describe(data.preprocess) == (
        f"x = (raw / 255 - {pixels.mean():.6g}) / {pixels.std():.6g}, as float32, each example "
        "reshaped to (1, 28, 28)")


def test_preprocessing_steps_read_back_from_json_and_a_vocabulary() -> None:
    """What an export's consumer does: the steps read back from preprocessing.json (strings
    equal to the ops' names, not the same objects) give the same inputs; a vocabulary maps
    characters to indices; an unknown step is an error, not another step."""
    import json

    from expkit.data import preprocess

    steps = [preprocess.scale(4), preprocess.normalize([1.0, 2.0], [0.5, 2.0]),
             preprocess.reshape((2, 1))]
    raw = np.array([[4.0, 8.0], [8.0, 16.0], [0.0, 4.0]], dtype=np.float32)
    want = ((raw / 4 - np.array([1.0, 2.0], np.float32)) / np.array([0.5, 2.0], np.float32)
            ).reshape(3, 2, 1)
    assert np.array_equal(preprocess.apply(steps, raw), want)
    assert np.array_equal(preprocess.apply(json.loads(json.dumps(steps)), raw), want)
    assert preprocess.describe(json.loads(json.dumps(steps))) == (
        "x = (raw / 4 - mean) / std (mean and std per feature, 2 each: preprocessing.json), as "
        "float32, each example reshaped to (2, 1)")
    vocabulary = json.loads(json.dumps([preprocess.vocabulary("ab c")]))
    assert preprocess.apply(vocabulary, "abba c").tolist() == [0, 1, 1, 0, 2, 3]
    assert preprocess.apply(vocabulary, "ab").dtype == np.int64
    assert preprocess.describe(vocabulary) == ("each character to its index in the vocabulary of 4 "
                                               "tokens (preprocessing.json), as int64")
    assert preprocess.describe([]) == "" and np.array_equal(preprocess.apply([], raw), raw)
    for op in ("aaa", "zzz", "scales"):
        with pytest.raises(ValueError, match=f"unknown preprocessing step '{op}'"):
            preprocess.apply([{"op": op}], raw)
