"""expkit export: a run's model as a folder to hand on, read back by the real readers.

safetensors loads back equal to the checkpoint's weights; the pt2 program (torch.export.load)
and the ONNX file (onnxruntime) give PyTorch's outputs on the whole test split in a fresh
process that cannot import the experiment's code (nor expkit); the model card says what was
trained, the weights, the test metrics with the group's interval, how to reproduce and load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import Workspace
from expkit.training.checkpoint import load_checkpoint
from expkit.utils.stats import summarize

ARGS = ("--experiment_id=mnist", "--epochs=2", "--hidden_sizes=[32]", "--use_cuda=false")

# run in a fresh interpreter: neither the experiments (lab) nor expkit can be imported
READERS = '''
import sys
sys.modules["lab"] = None
sys.modules["expkit"] = None
import numpy as np
import onnxruntime
import torch

folder, inputs, out = sys.argv[1:]
x = torch.load(inputs)
program = torch.export.load(f"{folder}/model.pt2").module()
with torch.no_grad():
    pt2 = program(x)
session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
onnx = session.run(None, {"input": x.numpy()})[0]
torch.save({"pt2": pt2, "onnx": torch.from_numpy(np.asarray(onnx))}, out)
'''


def _trained(ws: Workspace, *flags: str) -> Path:
    done = ws.run(*ARGS, "--seed=0", *flags)
    assert done.returncode == 0, done.stderr
    return ws.last_run()


def test_every_format_reads_back_with_the_real_readers(data_workspace: Workspace,
                                                        tmp_path: Path) -> None:
    ws = data_workspace
    run = _trained(ws, "--ema_decay=0.9")
    done = ws.run("export", str(run), "--format=safetensors,pt2,onnx")
    assert done.returncode == 0, done.stderr
    folder = run / "export"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "data_info.json", "model.onnx", "model.pt2", "model.safetensors"]
    assert not list(run.glob(".export*")), "no temporary folder is left"
    # safetensors: the best checkpoint's (averaged, tested) weights, bit for bit
    best = load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    weights = load_file(folder / "model.safetensors")
    assert weights.keys() == best.keys() and all(torch.equal(weights[k], best[k]) for k in best)
    import expkit

    rebuilt = expkit.load_export(folder, registry="lab.registry")
    assert all(torch.equal(v, best[k]) for k, v in rebuilt.state_dict().items())
    assert json.loads((folder / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    assert json.loads((folder / "data_info.json").read_text())["input_shape"] == [1, 28, 28]

    # pt2 and ONNX on the whole test split (any batch size), in a process without the code
    loaded = expkit.load_run(run, registry="lab.registry", machine=_machine(ws))
    x = loaded.experiment.build_data().test.x
    assert len(x) == 200
    with torch.no_grad():
        expected = loaded.model(x)
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "readers.py"
    script.write_text(READERS)
    result = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "x.pt"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(outputs["pt2"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["onnx"], expected, rtol=1e-4, atol=1e-5)
    assert "model.onnx: max |difference| from PyTorch's outputs on 200 test examples" in done.stdout


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
        "README.md", "config.json", "data_info.json", "model.safetensors"]
    card = (out / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    stats = summarize(values)
    assert f"| test_loss | {metrics['test']['test_loss']:.4f} | {stats.mean:.4f} ± " \
           f"{stats.half_width:.4f} [{stats.low:.4f}, {stats.high:.4f}] (N=3) |" in card
    assert "the best weights (epoch" in card and "lab.models.mlp.MLP" in card
    record = json.loads((run / "run.json").read_text())
    assert record["command"] in card and f"expkit reproduce {run}" in card
    assert "torch 2." in card and 'expkit.load_export("handed-on")' in card


def test_last_and_averaged_weights_and_clear_errors(data_workspace: Workspace) -> None:
    ws = data_workspace
    plain = _trained(ws)
    no_ema = ws.run("export", str(plain), "--weights=ema")
    assert no_ema.returncode == 1 and "kept no EMA of its weights (train with --ema_decay)" in no_ema.stderr
    assert "Traceback" not in no_ema.stderr and not (plain / "export").exists()
    bad = ws.run("export", str(plain), "--format=tflite")
    assert bad.returncode == 2 and "--format" in bad.stderr
    missing = ws.run("export", str(ws.root / "nope"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    mine = ws.root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = ws.run("export", str(plain), f"--out={mine}")
    assert refused.returncode == 1 and "holds files an export does not write (notes.txt)" in refused.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"], "no file of the user's is touched"

    averaged = _trained(ws, "--ema_decay=0.5")
    last = load_checkpoint(averaged / "checkpoints" / "last.pt")
    out = ws.root / "handed-on"  # the second export replaces the first
    for weights, key, said in (("last", "trained", "the last trained weights, not averaged (epoch 2)"),
                               ("ema", "model", "the EMA of the weights at the end of training")):
        assert ws.run("export", str(averaged), f"--weights={weights}", f"--out={out}").returncode == 0
        got = load_file(out / "model.safetensors")
        assert all(torch.equal(got[k], v) for k, v in last[key].items()), weights
        assert said in (out / "README.md").read_text()
    assert not all(torch.equal(last["trained"][k], v) for k, v in last["model"].items())
    assert not list(ws.root.glob(".handed-on*")), "no temporary or replaced folder is left"
