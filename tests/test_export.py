"""expkit export: a run's model as a folder to hand on, read back by the real readers.

safetensors loads back equal to the checkpoint's weights; the pt2 program (torch.export.load)
and the ONNX file (onnxruntime) give PyTorch's outputs on the whole test split in a fresh
process that cannot import the experiment's code (nor expkit); the model card says what was
trained, the weights, the test metrics with the group's interval, how to reproduce and load."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import Workspace, register
from expkit.training.checkpoint import load_checkpoint
from expkit.utils.stats import summarize

ARGS = ("--experiment_id=mnist", "--epochs=2", "--hidden_sizes=[32]", "--use_cuda=false")
#: scikit-learn's digits, where the best epoch (7) is not the last (8): the best and the last
#: weights score differently on the test split
DIGITS = ("--experiment_id=mnist", "--dataset=digits", "--epochs=8", "--lr=0.05", "--seed=0",
          "--hidden_sizes=[32]")

# run in a fresh interpreter: neither the experiments (lab) nor expkit can be imported. From the
# export folder and raw images alone: the preprocessing applied as preprocessing.json says, then
# each format (the safetensors by a hand-written forward of the MLP's layers).
READERS = '''
import json
import sys
sys.modules["lab"] = None
sys.modules["expkit"] = None
import numpy as np
import onnxruntime
import numpy as np
import torch
from safetensors.torch import load_file

folder, raw, out = sys.argv[1:]
x = np.load(raw).astype(np.float32)
for step in json.load(open(f"{folder}/preprocessing.json"))["steps"]:
    if step["op"] == "scale":
        x = x / np.float32(step["divide_by"])
    elif step["op"] == "normalize":
        x = (x - np.float32(step["mean"])) / np.float32(step["std"])
    elif step["op"] == "reshape":
        x = x.reshape(len(x), *step["shape"])
x = torch.from_numpy(x)
program = torch.export.load(f"{folder}/model.pt2").module()
with torch.no_grad():
    pt2 = program(x)
session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
onnx = session.run(None, {"input": x.numpy()})[0]
weights = load_file(f"{folder}/model.safetensors")
layers = sorted({int(k.split(".")[1]) for k in weights})
h = x.flatten(1)
for i, layer in enumerate(layers):
    h = h @ weights[f"net.{layer}.weight"].T + weights[f"net.{layer}.bias"]
    h = torch.relu(h) if i < len(layers) - 1 else h
torch.save({"inputs": x, "pt2": pt2, "onnx": torch.from_numpy(np.asarray(onnx)),
            "safetensors": h}, out)
'''


def _trained(ws: Workspace, *flags: str, args: tuple[str, ...] = ARGS) -> Path:
    done = ws.run(*args, "--seed=0", *flags) if args is ARGS else ws.run(*args, *flags)
    assert done.returncode == 0, done.stderr
    return ws.last_run()


def test_an_export_of_the_last_weights_is_used_from_raw_data_without_expkit(
        workspace: Workspace, tmp_path: Path) -> None:
    """The card's test metrics are the exported weights' own (the last, here not the best);
    a process without expkit or the experiment's code, given the folder and raw images, gets
    load_run's outputs from every format; the printed check is the largest difference."""
    ws = workspace
    run = _trained(ws, args=DIGITS)
    metrics = Workspace.metrics(run)
    assert metrics["best_epoch"] < metrics["final"]["epoch"], "the test needs best != last"
    done = ws.run("export", str(run), "--weights=last", "--format=safetensors,pt2,onnx")
    assert done.returncode == 0, done.stderr
    folder = run / "export"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "data_info.json", "model.onnx", "model.pt2",
        "model.safetensors", "preprocessing.json"]
    assert not list(run.glob(".export*")), "no temporary folder is left"
    last = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    weights = load_file(folder / "model.safetensors")
    assert weights.keys() == last.keys() and all(torch.equal(weights[k], last[k]) for k in last)
    import expkit

    rebuilt = expkit.load_export(folder, registry="lab.registry")
    assert all(torch.equal(v, last[k]) for k, v in rebuilt.state_dict().items())
    assert json.loads((folder / "config.json").read_text()) == json.loads((run / "config.json").read_text())

    # the card's metrics: the last weights evaluated on the test split, not the run's (best)
    loaded = expkit.load_run(run, "last", registry="lab.registry", machine=_machine(ws))
    data = loaded.experiment.build_data()
    own = loaded.evaluate(data.test, "test")
    card = (folder / "README.md").read_text()
    for name, value in own.items():
        assert f"| {name} | {value:.4f} |" in card
    assert f"{own['test_acc']:.4f}" != f"{metrics['test']['test_acc']:.4f}", \
        "the last weights score otherwise than the best on this run"
    assert "the last weights (epoch 8)" in card

    # raw digits (pixel values 0-16) -> the model's outputs, with nothing but the folder
    from lab.datasets.mnist import _digits

    raw = _digits()[2]
    assert len(raw) == len(data.test) == 359
    np.save(tmp_path / "raw.npy", raw)
    steps = json.loads((folder / "preprocessing.json").read_text())["steps"]
    mean, std = steps[1]["mean"], steps[1]["std"]
    assert f"x = (raw / 16 - {mean:.6g}) / {std:.6g}, as float32, each example reshaped to " \
           "(1, 8, 8)" in card
    with torch.no_grad():
        expected = loaded.model(data.test.x)
    script = tmp_path / "readers.py"
    script.write_text(READERS)
    result = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "raw.npy"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = torch.load(tmp_path / "out.pt")
    assert torch.equal(outputs["inputs"], data.test.x), "the stated steps give the model's inputs"
    torch.testing.assert_close(outputs["pt2"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["onnx"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs["safetensors"], expected, rtol=1e-5, atol=1e-5)
    # the printed figure: the largest |difference| over the 256 examples checked
    worst = float((outputs["onnx"][:256] - expected[:256]).abs().max())
    assert f"model.onnx: max |difference| from PyTorch's outputs on 256 test examples: " \
           f"{worst:.3g}" in done.stdout

    best = ws.run("export", str(run), f"--out={tmp_path / 'best'}")
    assert best.returncode == 0, best.stderr
    card = (tmp_path / "best" / "README.md").read_text()
    assert all(f"| {k} | {v:.4f} |" in card for k, v in metrics["test"].items()), \
        "the best weights are the ones the run tested"


def _machine(ws: Workspace):  # type: ignore[no-untyped-def]
    from expkit.config.machine import load_machine_config

    return load_machine_config(ws.root / "config.yaml", announce=lambda _: None)


def test_the_model_card_names_the_weights_metrics_group_and_how_to_load(
        data_workspace: Workspace) -> None:
    ws = data_workspace
    done = ws.run("repeat", "--seeds=0,1,2", *ARGS)
    assert done.returncode == 0, done.stderr
    runs = ws.run_dirs()
    values = [json.loads((r / "metrics.json").read_text())["test"]["test_loss"] for r in runs]
    run = runs[0]
    out = ws.root / "handed-on"
    exported = ws.run("export", str(run), f"--out={out}")
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "data_info.json", "model.safetensors", "preprocessing.json"]
    card = (out / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    stats = summarize(values)
    assert f"| test_loss | {metrics['test']['test_loss']:.4f} | {stats.mean:.4f} ± " \
           f"{stats.std:.4f} [{stats.low:.4f}, {stats.high:.4f}] (N=3) |" in card
    assert "its group: mean ± std [95% interval] (N)" in card, "the notation of compare's tables"
    assert "the best weights (epoch" in card and "lab.models.mlp.MLP" in card
    record = json.loads((run / "run.json").read_text())
    assert record["command"] in card and f"expkit reproduce {run}" in card
    assert "torch 2." in card and 'expkit.load_export("handed-on")' in card
    assert "The model takes a `float32` tensor of shape (N, 1, 28, 28)." in card
    steps = json.loads((out / "preprocessing.json").read_text())["steps"]
    assert [step["op"] for step in steps] == ["scale", "normalize", "reshape"]
    assert f"From raw data: x = (raw / 255 - {steps[1]['mean']:.6g}) / " in card
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.iterdir()), "readable files"
    files = record["data"]["files"]
    assert files and all(f"| data file | `{name}` sha256 `{digest[:16]}…` |" in card
                         for name, digest in files.items())


def test_last_and_averaged_weights_and_clear_errors(data_workspace: Workspace) -> None:
    ws = data_workspace
    plain = _trained(ws)
    no_ema = ws.run("export", str(plain), "--weights=ema")
    assert no_ema.returncode == 1 and "kept no EMA of its weights (train with --ema_decay)" in no_ema.stderr
    assert "Traceback" not in no_ema.stderr and not (plain / "export").exists()
    bad = ws.run("export", str(plain), "--format=tflite")
    assert bad.returncode == 2 and "--format" in bad.stderr
    empty = ws.run("export", str(plain), "--format=")
    assert empty.returncode == 2 and "--format" in empty.stderr and not (plain / "export").exists()
    anything = ws.run("export", str(plain), "--weights=newest")
    assert anything.returncode == 2 and "--weights" in anything.stderr
    missing = ws.run("export", str(ws.root / "nope"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    mine = ws.root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = ws.run("export", str(plain), f"--out={mine}")
    assert refused.returncode == 1 and "holds files an export does not write (notes.txt)" in refused.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"], "no file of the user's is touched"

    stepped = _trained(ws, "--max_steps=6", "--eval_every=3")
    assert ws.run("export", str(stepped), "--weights=last", f"--out={ws.root / 'stepped'}").returncode == 0
    assert "| weights | the last weights (step 6) |" in (ws.root / "stepped" / "README.md").read_text()

    averaged = _trained(ws, "--ema_decay=0.5")
    last = load_checkpoint(averaged / "checkpoints" / "last.pt")
    out = ws.root / "handed-on"  # the second export replaces the first
    best = load_checkpoint(averaged / "checkpoints" / "best.pt")
    assert ws.run("export", str(averaged), f"--out={out}").returncode == 0
    got = load_file(out / "model.safetensors")
    assert all(torch.equal(got[k], v) for k, v in best["model"].items()), "best: the averaged"
    assert f"the best weights (epoch {best['epoch']}, EMA of the weights)" in (out / "README.md").read_text()
    for weights, key, said in (("last", "trained", "the last trained weights, not averaged (epoch 2)"),
                               ("ema", "model", "the EMA of the weights at the end of training")):
        assert ws.run("export", str(averaged), f"--weights={weights}", f"--out={out}").returncode == 0
        got = load_file(out / "model.safetensors")
        assert all(torch.equal(got[k], v) for k, v in last[key].items()), weights
        assert said in (out / "README.md").read_text()
    assert not all(torch.equal(last["trained"][k], v) for k, v in last["model"].items())
    assert not list(ws.root.glob(".handed-on*")), "no temporary or replaced folder is left"


# a model whose exported program computes something else than the model: eager adds 0, the
# program (traced while exporting) adds `shift`
DRIFT = '''
import torch
from pydantic import Field
from torch import nn

from expkit import BaseExperiment, BaseModel, DataInfo, DataSplits, ExperimentArgs, Split


class DriftArgs(ExperimentArgs):
    shift: float = Field(1.0, description="what the exported program adds")
    examples: int = Field(20, description="examples in each split")


class Drift(BaseModel):
    def __init__(self, shift):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.shift = shift

    def forward(self, x):
        out = self.linear(x)
        return out + self.shift if torch.compiler.is_exporting() else out

    def step(self, batch):
        x, y = batch
        loss = ((self(x).squeeze(1) - y) ** 2).mean()
        return loss, {"loss": loss.detach() * len(y)}


class DriftExperiment(BaseExperiment[DriftArgs]):
    args_class = DriftArgs
    metrics = {"loss": "min"}
    default_monitor = "val_loss"

    def build_data(self):
        x = torch.linspace(-1, 1, 2 * self.args.examples).reshape(self.args.examples, 2)
        split = Split(x, x.sum(1))
        return DataSplits(None, (2,), {}, train=split, val=split, test=split)

    def build_model(self, data: DataInfo):
        return Drift(self.args.shift)
'''


def test_an_exported_program_beyond_the_tolerance_fails_the_export(
        workspace: Workspace, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The check can fail: a program off by 1e-3 (beyond 1e-4 + 1e-4 |output|) exits 1 with
    one line naming the format and the largest difference, and writes nothing; one off by
    1e-5 passes and prints that figure."""
    registry = register(tmp_path, monkeypatch, "drift", DRIFT, "DriftExperiment")
    ws = workspace
    for shift, ok in (("0.001", False), ("0.00001", True)):
        done = ws.run("--experiment_id=drift", "--epochs=1", "--seed=0", f"--shift={shift}",
                      registry=registry)
        assert done.returncode == 0, done.stderr
        run = ws.last_run("drift")
        exported = ws.run("export", str(run), "--format=safetensors,pt2" + (",onnx" if ok else ""),
                          registry=registry)
        if ok:
            assert exported.returncode == 0, exported.stderr
            for name in ("model.pt2", "model.onnx"):
                found = re.search(rf"{name}: max \|difference\| from PyTorch's outputs on 20 test "
                                  r"examples: (\S+)", exported.stdout)
                assert found and float(found.group(1)) == pytest.approx(1e-5, rel=0.05), name
            continue
        assert exported.returncode == 1, exported.stdout
        lines = exported.stderr.strip().splitlines()
        assert lines[0] == ("run.py: error: --format=pt2: model.pt2's outputs differ from "
                            "PyTorch's by up to 0.001 on 20 test examples, beyond the tolerance "
                            "(0.0001 + 0.0001 x |output|); nothing was written"), lines
        assert "Traceback" not in exported.stderr
        assert not (run / "export").exists() and not list(run.glob(".export*"))
    # a batch dimension needs two examples to be exported as dynamic: two do, one does not
    for examples, code in (("2", 0), ("1", 1)):
        done = ws.run("--experiment_id=drift", "--epochs=1", "--seed=0", "--shift=0",
                      f"--examples={examples}", "--batch_size=1", registry=registry)
        assert done.returncode == 0, done.stderr
        exported = ws.run("export", str(ws.last_run("drift")), "--format=pt2", registry=registry)
        assert exported.returncode == code, exported.stderr
        assert code == 0 or "fewer than 2 examples" in exported.stderr
