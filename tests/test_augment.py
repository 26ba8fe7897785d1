"""Augmentation: batched transforms on the device (fast path) and per-item transforms of a
researcher's own Dataset (through workers), both seeded so that a resume, a rerun and any
number of workers see the same augmented batches."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Workspace, register
from expkit.data import augment
from expkit.data.stream import StreamSplit
from test_resume import HOOKS, assert_same_training, big_workspace  # noqa: F401 (fixture)


def test_random_crop_shifts_each_image_by_at_most_the_padding() -> None:
    x = torch.zeros(200, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one lit pixel in the middle of each image
    out = augment.random_crop(2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))
    where = out[:, 0].flatten(1).argmax(1)
    shifts = {(int(i) // 9 - 4, int(i) % 9 - 4) for i in where}
    assert shifts == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}, \
        "every shift within the padding occurs, and no other"
    again = augment.random_crop(2)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again), "the same generator state gives the same crops"


def test_flip_and_noise() -> None:
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4)
    g = torch.Generator()
    assert torch.equal(augment.hflip(1.0)(x, g), x.flip(-1))
    assert torch.equal(augment.hflip(0.0)(x, g), x)
    flipped = augment.hflip(0.5)(torch.ones(1000, 1, 2, 2) * torch.tensor([[0.0, 1.0]]), g)
    assert 400 < int((flipped[:, 0, 0, 0] == 1).sum()) < 600, "about half the images flipped"
    noisy = augment.noise(0.5)(torch.zeros(10_000, 1, 1, 1), g)
    assert abs(float(noisy.std()) - 0.5) < 0.02
    batch = augment.inputs(augment.hflip(1.0))({"x": x, "y": torch.arange(2)}, g)
    assert isinstance(batch, dict) and torch.equal(batch["x"], x.flip(-1))


AUG = ("--experiment_id=fashion_aug", "--dataset=mnist", "--epochs=2", "--seed=1",
       "--channels=[8,16]", "--batch_size=64", "--use_cuda=false")


@pytest.mark.slow
def test_augmented_batches_are_the_same_across_a_resume(big_workspace: Workspace) -> None:  # noqa: F811
    ws = big_workspace  # 900 training images: 15 batches an epoch
    assert ws.run(*AUG).returncode == 0
    reference = ws.last_run("fashion_aug")
    stopped = ws.fork(*AUG, env={"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": "step:20:INT"})
    assert stopped.returncode == 130, stopped.stderr
    run = next(r for r in ws.run_dirs("fashion_aug") if r != reference)
    assert ws.run("resume", str(run)).returncode == 0
    assert_same_training(reference, run)
    grids = sorted(p.name for p in (run / "artifacts" / "augmented").iterdir())
    assert grids == ["1.png", "2.png"], "a grid of augmented inputs at each evaluation"
    again = ws.run("reproduce", str(reference))  # the augmentation draws come from the seed
    assert again.returncode == 0 and "every metric matches" in again.stdout, again.stdout
    # the augmentation is applied: without it the same seed trains to other numbers
    plain = ws.run(*AUG, "--crop_padding=0", "--hflip=0")
    assert plain.returncode == 0
    assert ws.metrics(ws.last_run("fashion_aug"))["final"] != ws.metrics(reference)["final"]


class _Jitter(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Items with random per-item transforms from torch's, Python's and numpy's global RNGs."""

    def __init__(self, n: int) -> None:
        self.x = torch.linspace(-1, 1, n * 4).view(n, 4)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i] + 0.1 * torch.randn(4)
        x = x.flip(0) if random.random() < 0.5 else x
        return x * float(np.random.uniform(0.9, 1.1)), torch.tensor(i % 2)


def _items(split: StreamSplit, skip: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [x for x, _ in split.batches(8, generator, skip)]


def test_per_item_transforms_do_not_depend_on_workers_or_on_a_resume() -> None:
    one, two = StreamSplit(_Jitter(50), 0, augmented=True), StreamSplit(_Jitter(50), 2, augmented=True)
    plain = StreamSplit(torch.utils.data.TensorDataset(torch.zeros(50, 4), torch.zeros(50)), 0)
    torch.manual_seed(0)
    _items(plain)  # the DataLoader itself draws a seed from torch's RNG, random items or not
    after_plain, state = torch.get_rng_state(), (random.getstate(), np.random.get_state()[1])
    torch.manual_seed(0)
    inline = _items(one)
    assert torch.equal(torch.get_rng_state(), after_plain) and random.getstate() == state[0] \
        and (np.random.get_state()[1] == state[1]).all(), \
        "the items' own draws leave this process's RNGs as they were"
    workers = _items(two)
    assert all(torch.equal(a, b) for a, b in zip(inline, workers, strict=True)), \
        "two workers read the items one process reads"
    assert all(torch.equal(a, b) for a, b in zip(_items(two, skip=3), inline[3:], strict=True)), \
        "a pass resumed after 3 batches reads the items the uninterrupted pass read"
    second = [x for x, _ in one.batches(8, torch.Generator().manual_seed(6))]
    assert not torch.equal(torch.cat(second).sort(0).values, torch.cat(inline).sort(0).values), \
        "another pass draws other transforms"
    unseeded = StreamSplit(_Jitter(50), 0)
    assert not all(torch.equal(a, b) for a, b in zip(_items(unseeded), inline, strict=True))


PER_ITEM = '''
import os, random
import numpy as np, torch
from expkit.data.base import DataInfo, DataSplits
from expkit.data.stream import StreamSplit
from expkit.engine.experiment import BaseExperiment, ExperimentArgs
from expkit.models.base import BaseModel
from expkit.training.callbacks import Callback

class Jitter(torch.utils.data.Dataset):
    def __init__(self, n, noisy):
        self.x, self.noisy = torch.linspace(-1, 1, n * 4).view(n, 4), noisy
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        if not self.noisy:
            return self.x[i], torch.tensor(int(self.x[i].sum() > 0))
        x = self.x[i] + 0.3 * torch.randn(4)
        x = x.flip(0) if random.random() < 0.5 else x
        return x * float(np.random.uniform(0.9, 1.1)), torch.tensor(int(self.x[i].sum() > 0))

class Linear(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
    def forward(self, x):
        return self.fc(x)

class StopAt(Callback):  # what the SIGINT handler does, at a chosen optimizer step
    def on_train_batch_end(self, trainer, i):
        if trainer.steps == int(os.environ.get("STOP_AT", 0)):
            trainer.stop_requested = "SIGINT"

class PerItem(BaseExperiment[ExperimentArgs]):
    args_class = ExperimentArgs
    def build_data(self):
        workers = int(os.environ.get("WORKERS", 2))
        return DataSplits(2, (4,), train=StreamSplit(Jitter(96, True), workers, augmented=True),
                          val=StreamSplit(Jitter(32, False), 0), test=None)
    def build_model(self, data):
        return Linear()
    def build_callbacks(self, run_dir):
        return [StopAt()]
'''


def test_a_dataset_with_per_item_transforms_resumes_exactly(
        workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace
    registry = register(tmp_path, monkeypatch, "per_item", PER_ITEM, "PerItem")
    args = ("--experiment_id=per_item", "--epochs=3", "--batch_size=16", "--seed=2", "--lr=0.05")
    assert ws.run(*args, registry=registry).returncode == 0
    reference = ws.last_run("per_item")
    stopped = ws.run(*args, env={"STOP_AT": "8"}, registry=registry)  # inside the second epoch
    assert stopped.returncode == 130, stopped.stderr
    run = ws.last_run("per_item")
    assert ws.run("resume", str(run), registry=registry).returncode == 0
    assert_same_training(reference, run)
    inline = ws.run(*args, env={"WORKERS": "0"}, registry=registry)
    assert inline.returncode == 0
    assert_same_training(reference, ws.last_run("per_item"))
