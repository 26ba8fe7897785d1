"""Guard tests of a run's life, in this process: the heartbeat that tells a live run from a
killed one on another host, and what evaluation sees of training-only transforms. `make
mutants` runs them against mutants of engine/callbacks.py and training/evaluate.py
(tests/mutants_run.py picks them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import Workspace
from test_guarantees_runs import finished_run  # noqa: F401 (the module's run, as a fixture)

# ---- what tells a live run from a killed one, over its life -----------------------------------

WATCHED = '''
import json
import os
import socket
from pathlib import Path

from expkit.rundir.dirs import shown_status
from expkit.training.callbacks import Callback
from lab.experiments.mnist import MnistExperiment

STALE = "2020-01-01T00:00:00+00:00"


class Watch(Callback):
    """Before each epoch: how run.json shows this run from another host and whether it names
    this process; then makes the heartbeat stale, as if the run had been silent for years."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)

    def on_epoch_start(self, trainer):
        path = self.run_dir / "run.json"
        record = json.loads(path.read_text())
        seen = [shown_status({**record, "host": "another-host"}, self.run_dir),
                record["pid"] == os.getpid(), record["host"] == socket.gethostname()]
        with open(self.run_dir / "watch.jsonl", "a") as f:
            f.write(json.dumps(seen) + "\\n")
        path.write_text(json.dumps({**record, "heartbeat": STALE}))


class Watched(MnistExperiment):
    def build_callbacks(self, run_dir):
        return [Watch(run_dir)]
'''


def test_heartbeat_keeps_a_live_run_alive_on_another_host_each_epoch(
        finished_run: tuple[Workspace, Path], tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """run.json's heartbeat is refreshed after every epoch (a resumed run's too), and names the
    process that runs it: another host tells a live run from a killed one by them alone."""
    from conftest import register

    ws, _ = finished_run
    registry = register(tmp_path, monkeypatch, "watched", WATCHED, "Watched")
    args = ("--experiment_id=watched", "--epochs=3", "--max_train_samples=120", "--seed=4",
            "--hidden_sizes=[8]")
    done = ws.run(*args, registry=registry)
    assert done.returncode == 0, done.stderr
    run = ws.last_run("watched")
    seen = [json.loads(line) for line in (run / "watch.jsonl").read_text().splitlines()]
    assert seen == [["running", True, True]] * 3, seen  # epochs 2 and 3: stale, then refreshed
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "status": "running", "pid": 1 << 30,
                                              "host": "old-host"}))
    more = ws.run("resume", str(run), "--epochs=4", registry=registry)
    assert more.returncode == 0, more.stderr
    seen = [json.loads(line) for line in (run / "watch.jsonl").read_text().splitlines()]
    assert seen[3:] == [["running", True, True]], "a resumed run records who runs it now"


# ---- what evaluation sees of training-only transforms ----------------------------------------

NOISY = '''
from expkit.data import augment
from lab.experiments.mnist import MnistExperiment


class Noisy(MnistExperiment):
    """Training batches drowned in noise and mirrored: evaluation must see the clean data."""

    def build_data(self):
        data = super().build_data()
        data.augment = augment.inputs(augment.noise(50.0), augment.hflip(1.0))
        return data
'''


def test_evaluation_sees_the_clean_splits_never_the_training_augmentation(
        finished_run: tuple[Workspace, Path], tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """val and test metrics are those of the model on the splits as they are: computed here by
    hand (cross-entropy and accuracy) from the saved weights, they match the run's."""
    import torch.nn.functional as F

    import expkit
    from conftest import register
    from expkit.config.machine import MachineConfig

    ws, _ = finished_run
    registry = register(tmp_path, monkeypatch, "noisy", NOISY, "Noisy")
    done = ws.run("--experiment_id=noisy", "--epochs=1", "--max_train_samples=120", "--seed=4",
                  "--hidden_sizes=[8]", registry=registry)
    assert done.returncode == 0, done.stderr
    run = ws.last_run("noisy")
    loaded = expkit.load_run(run, "last", registry=registry, machine=MachineConfig(cache_dir=ws.cache))
    data = loaded.experiment.build_data()
    metrics = json.loads((run / "metrics.json").read_text())
    for split, name, expected in ((data.val, "val", metrics["final"]),
                                  (data.test, "test", metrics["test"])):
        with torch.no_grad():
            logits = loaded.model(split.x.float())
        loss = float(F.cross_entropy(logits, split.y, reduction="sum")) / len(split.y)
        acc = float((logits.argmax(1) == split.y).float().mean())
        assert expected[f"{name}_loss"] == pytest.approx(loss, rel=1e-5), name
        assert expected[f"{name}_acc"] == pytest.approx(acc, abs=1e-9), name
