"""Starting from another run's weights: a digit classifier pretrained (the mnist MLP on
scikit-learn's digits) gives its first layer to a model with another layout (an encoder and a
head), renamed (--init_map) and chosen (--init_modules); the loaded tensors are the source's bit
for bit at step 0 and the fresh ones are not; a misfit is a usage error before any run directory
exists; frozen modules stay as they are; and the fine-tuned run needs its source no more."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import expkit
from conftest import Workspace, register
from expkit.training.checkpoint import load_checkpoint

TUNED = '''
import torch
from torch import nn

from expkit import BaseExperiment, BaseModel, Callback, DataInfo, ExperimentArgs
from lab.experiments.mnist import MnistArgs
from lab.datasets.mnist import ImageData


class Tuned(BaseModel):
    def __init__(self, classes):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.encoder(x))


class AtStart(Callback):
    """The model's weights when training starts, to compare with the source's."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def on_fit_start(self, trainer):
        torch.save(trainer.model.state_dict(), self.run_dir / "start.pt")


class TunedExperiment(BaseExperiment[MnistArgs]):
    args_class = MnistArgs

    def build_data(self):
        return ImageData(self.args.dataset, self.machine.cache_dir).load()

    def build_model(self, data: DataInfo):
        return Tuned(data.classes())

    def build_callbacks(self, run_dir):
        return [AtStart(run_dir)]
'''

DIGITS = ("--dataset=digits", "--seed=0", "--epochs=2")


@pytest.fixture
def tuned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "exp"
    folder.mkdir()
    return register(folder, monkeypatch, "tuned", TUNED, "TunedExperiment")


def test_partial_and_renamed_weights_checked_recorded_and_self_contained(
        workspace: Workspace, tuned: str) -> None:
    ws = workspace
    assert ws.run("--experiment_id=mnist", "--hidden_sizes=[32]", *DIGITS).returncode == 0
    source = ws.last_run("mnist")
    best = load_checkpoint(source / "checkpoints" / "best.pt")["model"]

    # the encoder from the classifier's first layer, renamed; the head starts fresh
    done = ws.run("--experiment_id=tuned", *DIGITS, f"--init_from={source}",
                  "--init_map=net.1.:encoder.1.", "--init_modules=encoder", registry=tuned)
    assert done.returncode == 0, done.stderr
    run = ws.last_run("tuned")
    start = torch.load(run / "start.pt", weights_only=True)
    assert torch.equal(start["encoder.1.weight"], best["net.1.weight"])
    assert torch.equal(start["encoder.1.bias"], best["net.1.bias"])
    assert not torch.equal(start["head.weight"], best["net.3.weight"]), "the head starts fresh"
    epoch = load_checkpoint(source / "checkpoints" / "best.pt")["epoch"]
    assert f"init: 2 of 4 tensors from {source.relative_to(ws.root)} (best.pt, epoch {epoch}); fresh: head" \
        in done.stdout.replace(str(ws.root) + "/", "")
    record = json.loads((run / "run.json").read_text())
    assert record["init"] == {"from": str(source / "checkpoints" / "best.pt"), "run_id": source.name,
                              "epoch": epoch, "tensors": 2, "fresh": ["head"]}

    # every tensor, renamed (no --init_modules): the head too; from last.pt when asked
    done = ws.run("--experiment_id=tuned", *DIGITS, f"--init_from={source}", "--init_checkpoint=last",
                  "--init_map=net.1.:encoder.1.,net.3.:head.", registry=tuned)
    assert done.returncode == 0, done.stderr
    start = torch.load(ws.last_run("tuned") / "start.pt", weights_only=True)
    last = load_checkpoint(source / "checkpoints" / "last.pt")["model"]
    assert torch.equal(start["head.weight"], last["net.3.weight"])
    assert json.loads((ws.last_run("tuned") / "run.json").read_text())["init"]["fresh"] == []

    # misfits: one line, exit 2, no run directory
    runs = len(ws.run_dirs("tuned"))
    for flags, says in (((), "its weights do not fit this model: this model's encoder.1.bias is "
                             "not in it"),
                        (("--init_modules=decoder",), "--init_modules: this model has no module "
                                                      "'decoder'"),
                        (("--init_map=net.3.:encoder.1.", "--init_modules=encoder"),
                         "encoder.1.weight is (10, 32) there and (32, 64) in this model")):
        refused = ws.run("--experiment_id=tuned", *DIGITS, f"--init_from={source}", *flags,
                         registry=tuned)
        assert refused.returncode == 2, refused.stdout
        assert says in refused.stderr.splitlines()[0] and "Traceback" not in refused.stderr
    assert len(ws.run_dirs("tuned")) == runs, "nothing was written for a misfit"
    refused = ws.run("--experiment_id=tuned", *DIGITS, f"--init_from={source}",
                     "--init_modules=head", registry=tuned)
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"run.py: error: --init_modules: {source / 'checkpoints' / 'best.pt'} has no module 'head'",
        "run.py: its modules: net (--init_map renames them)"]
    refused = ws.run("--experiment_id=tuned", *DIGITS, "--freeze_modules=decoder", registry=tuned)
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        "run.py: error: --freeze_modules: this model has no parameters under 'decoder'",
        "run.py: its modules: encoder, head"]

    # tensors named one by one, from a .pt file outside any run
    loose = ws.root / "weights.pt"
    shutil.copyfile(source / "checkpoints" / "best.pt", loose)
    done = ws.run("--experiment_id=tuned", *DIGITS, f"--init_from={loose}",
                  "--init_map=net.1.:encoder.1.", "--init_modules=encoder.1.weight,encoder.1.bias",
                  registry=tuned)
    assert done.returncode == 0, done.stderr
    init = json.loads((ws.last_run("tuned") / "run.json").read_text())["init"]
    assert init["run_id"] is None and init["tensors"] == 2 and init["from"] == str(loose)

    # frozen: the encoder keeps the source's weights, the head trains
    done = ws.run("--experiment_id=tuned", *DIGITS, f"--init_from={source}",
                  "--init_map=net.1.:encoder.1.", "--init_modules=encoder",
                  "--freeze_modules=encoder", registry=tuned)
    assert done.returncode == 0, done.stderr
    frozen = ws.last_run("tuned")
    assert "frozen: encoder (2,080 parameters, not trained)" in done.stdout
    trained = load_checkpoint(frozen / "checkpoints" / "last.pt")
    assert torch.equal(trained["model"]["encoder.1.weight"], best["net.1.weight"])
    assert not torch.equal(trained["model"]["head.weight"],
                           torch.load(frozen / "start.pt", weights_only=True)["head.weight"])
    assert len(trained["optimizer"]["param_groups"][0]["params"]) == 2, "head weight and bias"

    # the source is gone: the fine-tuned runs load, export and list; reproduce says why not
    shutil.rmtree(source)
    loaded = expkit.load_run(run, registry=tuned)
    assert torch.equal(loaded.model.state_dict()["encoder.1.weight"],
                       load_checkpoint(run / "checkpoints" / "best.pt")["model"]["encoder.1.weight"])
    exported = ws.run("export", str(run), registry=tuned)
    assert exported.returncode == 0, exported.stderr
    again = ws.run("reproduce", str(run), registry=tuned)
    assert again.returncode == 2
    assert f"--init_from={source}: no such file or run directory; this run starts from its " \
        "weights" in again.stderr
