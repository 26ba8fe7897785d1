"""expkit export: a run's model as a folder to hand on.

    expkit export RUN_DIR [--weights=best|last|ema|swa] [--format=safetensors,pt2,onnx] [--out=DIR]

The folder holds the weights in each format asked for, the run's config.json, the dataset's
state (data_info.json: what `build_model` was given), and a model card (README.md): what was
trained on what, the weights chosen, the test metrics (with the group's mean and interval when
the run is one seed of a `repeat` group), the command that reproduces it, the environment, and
the few lines that load each file. pt2 (`torch.export`, a dynamic batch dimension) and ONNX
(torch's dynamo exporter) run without the experiment's code; both are checked at export against
PyTorch's outputs on test examples, and the card says by how much they differ. The folder is
written beside its place and renamed into it: an export that fails leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from expkit.config.registry import Registry
from expkit.data.base import DataSplits
from expkit.engine.card import (
    ATOL,
    FILES,
    PREPROCESSING,
    RTOL,
    TOLERANCE_TEXT,
    Check,
    Weights,
    model_card,
)
from expkit.engine.loading import DATA_INFO, LoadedRun, jsonable, load_run
from expkit.errors import ExpkitError, UsageError
from expkit.rundir.results import Run, read_run
from expkit.training.checkpoint import load_checkpoint, reason

__all__ = ["ATOL", "RTOL", "Check", "compare_outputs", "export_run", "model_card", "preprocessing"]

Format = Literal["safetensors", "pt2", "onnx"]
CHECK_EXAMPLES = 256  # test examples each exported program is checked on
#: what each format needs beyond torch, and where it comes from
NEEDS = {"safetensors": ("safetensors",), "onnx": ("onnx", "onnxscript")}


def export_run(run_dir: Path, weights: Weights = "best", formats: list[Format] | None = None,
               out: Path | None = None, registry: str | Registry | None = None,
               say: Callable[[str], None] = print) -> Path:
    """Write the export folder of `run_dir` (default RUN_DIR/export); returns its path.

    The card's test metrics are those of the weights written, evaluated here on the test
    split; a pt2 or ONNX program whose outputs differ from PyTorch's beyond TOLERANCE fails
    the export (nothing written)."""
    formats = list(dict.fromkeys(formats if formats is not None else ["safetensors"]))
    if not formats:
        raise UsageError("--format: name at least one of safetensors, pt2, onnx")
    _check_installed(formats)
    run = read_run(run_dir)
    from expkit.config.machine import load_machine_config

    machine = load_machine_config(announce=say)
    loaded, chosen, info = _loaded(run, weights, registry, machine)
    folder = Path(out) if out is not None else run.path / "export"
    _check_replaceable(folder)
    data = loaded.experiment.build_data()
    tested = _tested(loaded, data)
    inputs, sizes = _test_inputs(data, need={"pt2", "onnx"} & set(formats))
    temp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        checks: dict[str, Check | None] = {
            name: _write(name, loaded.model, temp / FILES[name], inputs) for name in formats}
        for name, check in checks.items():
            if check is not None and not check.within:
                raise ExpkitError(
                    f"--format={name}: {FILES[name]}'s outputs differ from PyTorch's by up to "
                    f"{check.max_difference:.3g} on {check.examples} test examples, beyond the "
                    f"tolerance ({TOLERANCE_TEXT}); nothing was written",
                    hint="the model does something its exported program does not (a branch on "
                         "Python state, a random op in eval mode); export --format=safetensors")
        (temp / "config.json").write_text(json.dumps(run.config, indent=2) + "\n")
        (temp / DATA_INFO).write_text(json.dumps(jsonable(info), indent=2) + "\n")
        (temp / PREPROCESSING).write_text(
            json.dumps(preprocessing(info, inputs), indent=2) + "\n")
        (temp / "README.md").write_text(model_card(run, loaded, chosen, weights, tested, checks,
                                                   info, inputs, sizes, folder))
        _replace(folder, temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    say(f"exported {run.path}, {chosen}, to {folder}: "
        + ", ".join(FILES[name] for name in formats)
        + f", config.json, {DATA_INFO}, {PREPROCESSING}, README.md")
    for name, check in checks.items():
        if check is not None:
            say(f"  {FILES[name]}: max |difference| from PyTorch's outputs on {check.examples} "
                f"test examples: {check.max_difference:.3g}")
    return folder


def _tested(loaded: LoadedRun, data: DataSplits) -> dict[str, float] | None:
    """The test metrics of the weights in `loaded.model` (the ones exported), by the
    experiment's declared metrics; None when the data has no test split."""
    if data.test is None:
        return None
    return loaded.evaluate(data.test, "test")


def preprocessing(info: dict[str, Any], inputs: torch.Tensor | None) -> dict[str, Any]:
    """preprocessing.json: the steps from raw data to the model's inputs, the input's shape
    and dtype, and whether the exported programs include the steps (they do not)."""
    return {"steps": info.get("preprocess") or [],
            "input_shape": list(info.get("input_shape") or []),
            "input_dtype": str(inputs.dtype).removeprefix("torch.") if inputs is not None else None,
            "in_exported_programs": False}


#: what an export folder holds: an existing folder with anything else is never replaced
WRITTEN = {*FILES.values(), "config.json", DATA_INFO, PREPROCESSING, "README.md"}


def _check_replaceable(folder: Path) -> None:
    """`folder` is new, empty, or an earlier export (which the new one replaces); anything else
    is one clear error before any work, so that no file of the user's is ever removed."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ExpkitError(f"--out={folder}: a file is there; give a folder for the export")
    other = sorted(p.name for p in folder.iterdir() if p.name not in WRITTEN)
    if other:
        raise ExpkitError(f"--out={folder}: the folder holds files an export does not write "
                          f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); "
                          "give a new folder, or an earlier export's, which is replaced")


def _check_installed(formats: list[Format]) -> None:
    import importlib.util

    for name in formats:
        missing = [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]
        if missing:
            raise ExpkitError(f"--format={name} needs the {' and '.join(missing)} package"
                              f"{'s' if len(missing) > 1 else ''}",
                              hint="pip install 'expkit[export]'")


def _loaded(run: Run, weights: Weights, registry: str | Registry | None, machine: Any
            ) -> tuple[LoadedRun, str, dict[str, Any]]:
    """The run's model with the chosen weights in it, how the card names them, and the
    checkpoint's data_info."""
    loaded = load_run(run.path, "best" if weights == "best" else "last", registry=registry,
                      machine=machine)
    state = load_checkpoint(loaded.checkpoint)
    average, info = state.get("average"), state["data_info"]
    row = state.get("metrics") or (state.get("history") or [{}])[-1]  # best.pt's, or last.pt's
    at = f"step {row['step']}" if "step" in row else f"epoch {state['epoch']}"
    if weights in ("ema", "swa"):
        if not average or average.get("kind") != weights:
            flag = "--ema_decay" if weights == "ema" else "--swa_start"
            raise ExpkitError(f"{run.path}: this run kept no {weights.upper()} of its weights "
                              f"(train with {flag})", hint="choose --weights=best or --weights=last")
        return loaded, f"the {weights.upper()} of the weights at the end of training ({at})", info
    if weights == "last" and "trained" in state:  # the optimizer's weights, not the average
        loaded.model.load_state_dict(state["trained"])
        return loaded, f"the last trained weights, not averaged ({at})", info
    kind = f", {average['kind'].upper()} of the weights" if average else ""
    return loaded, f"the {weights} weights ({at}{kind})", info


def _test_inputs(data: DataSplits, need: set[str]
                 ) -> tuple[torch.Tensor | None, dict[str, int]]:
    """Up to CHECK_EXAMPLES inputs of the test split (else val, else train): what a program is
    traced with and checked on, and the card's input shape and dtype (None: the batches are
    named tensors); and the splits' sizes, for the card."""
    sizes = {name: len(split) for name in ("train", "val", "test")
             if (split := getattr(data, name)) is not None}
    split = data.test if data.test is not None else data.val if data.val is not None else data.train
    batch = next(iter(split.batches(CHECK_EXAMPLES)))
    if not isinstance(batch, (tuple, list)):
        if need:
            raise ExpkitError("--format=pt2 and onnx export `model(x)` with x a batch's inputs; "
                              "this experiment's batches are named tensors",
                              hint="export --format=safetensors, and load it with expkit.load_export")
        return None, sizes
    if need and len(batch[0]) < 2:
        raise ExpkitError("the test split has fewer than 2 examples: too few to export a "
                          "dynamic batch dimension")
    return batch[0].cpu(), sizes


def _write(name: str, model: torch.nn.Module, path: Path, inputs: torch.Tensor | None
           ) -> Check | None:
    """Write `model` in format `name` to `path`; the written program's outputs checked against
    the model's on `inputs` (None: safetensors, or no runtime to check with)."""
    model = model.cpu().eval()
    if name == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
                  str(path), metadata={"format": "pt"})
        path.chmod(0o644)  # readable like the folder's other files (it is written 0600)
        return None
    assert inputs is not None
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    shapes = ({0: batch},)
    try:
        with torch.no_grad(), _quiet():
            if name == "pt2":
                torch.export.save(torch.export.export(model, (inputs,), dynamic_shapes=shapes), path)
            else:
                torch.onnx.export(model, (inputs,), str(path), dynamo=True, input_names=["input"],
                                  output_names=["output"], dynamic_shapes=shapes, external_data=False)
    except Exception as e:
        raise ExpkitError(f"--format={name}: the model could not be exported: "
                          f"{type(e).__name__}: {reason(e)}",
                          hint="export --format=safetensors (the weights alone) works for any model"
                          ) from None
    with _quiet():
        return _difference(name, model, path, inputs)


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters' progress lines and warnings kept off the console (errors are raised,
    not printed)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's internals, not the user's
            yield
    finally:
        logger.setLevel(level)


def _difference(name: str, model: torch.nn.Module, path: Path, inputs: torch.Tensor) -> Check | None:
    """The written program run by its own reader on `inputs` against PyTorch's outputs."""
    with torch.no_grad():
        expected = model(inputs).float()
        if name == "pt2":
            got = torch.export.load(path).module()(inputs).float()
        else:
            try:
                import onnxruntime
            except ImportError:
                return None
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0]).float()
    return compare_outputs(got, expected)


def compare_outputs(got: torch.Tensor, expected: torch.Tensor) -> Check:
    """`got` against `expected`: the largest |difference|, and whether every element is within
    ATOL + RTOL * |expected| (a NaN output is never within)."""
    difference = (got - expected).abs()
    within = bool((difference <= ATOL + RTOL * expected.abs()).all())
    worst = difference.nan_to_num(nan=float("inf")).max() if difference.numel() else torch.tensor(0.0)
    return Check(float(worst), within, len(got))


def _replace(folder: Path, temp: Path) -> None:
    """`temp` renamed to `folder`; an earlier export there is removed once the new one is in."""
    old = folder.parent / f".{folder.name}.{os.getpid()}.old"
    if folder.exists():
        folder.rename(old)
    temp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
