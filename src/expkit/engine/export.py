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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from expkit.config.registry import Registry
from expkit.data.base import DataSplits
from expkit.data.preprocess import describe
from expkit.engine.loading import DATA_INFO, LoadedRun, jsonable, load_run
from expkit.errors import ExpkitError, UsageError
from expkit.reports.report import reproduce_command
from expkit.rundir.groups import Group
from expkit.rundir.results import Run, group_members, read_run
from expkit.training.checkpoint import load_checkpoint, reason
from expkit.utils.stats import Summary

Weights = Literal["best", "last", "ema", "swa"]
Format = Literal["safetensors", "pt2", "onnx"]
FILES: dict[str, str] = {"safetensors": "model.safetensors", "pt2": "model.pt2", "onnx": "model.onnx"}
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


#: an exported program passes its check when every output is within
#: ATOL + RTOL * |PyTorch's output| of PyTorch's (float32 kernels of other runtimes differ by
#: rounding: 1e-7 to 2e-5 measured on the example experiments)
RTOL, ATOL = 1e-4, 1e-4
TOLERANCE_TEXT = f"{ATOL:g} + {RTOL:g} x |output|"
#: how a raw input becomes the model's input, with its constants (expkit.data.preprocess)
PREPROCESSING = "preprocessing.json"


@dataclass
class Check:
    """An exported program's outputs against PyTorch's on the test examples."""

    max_difference: float  # the largest |difference| of any output
    within: bool  # every output within ATOL + RTOL * |PyTorch's|
    examples: int


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


def _group_line(run: Run, metric: str) -> str:
    """The group's mean ± std [95% interval] and N of a test metric, as compare writes them
    ("" when not in a group)."""
    group = run.record.get("group")
    if not isinstance(group, dict) or not group.get("name"):
        return ""
    runs = list(group_members(run.path.parent.parent, run.experiment_id, str(group["name"])).values())
    stats: Summary | None = Group({}, runs).stats(metric)
    if stats is None:
        return ""
    if stats.n < 2:
        return f"{stats.mean:.4f} (N=1)"
    return (f"{stats.mean:.4f} ± {stats.std:.4f} [{stats.low:.4f}, {stats.high:.4f}] "
            f"(N={stats.n})")


def model_card(run: Run, loaded: LoadedRun, chosen: str, weights: Weights,
               tested: dict[str, float] | None, checks: dict[str, Check | None],
               info: dict[str, Any], inputs: torch.Tensor | None, sizes: dict[str, int] | None,
               folder: Path) -> str:
    """README.md of an export: what was trained on what, the test metrics of the weights it
    holds, how to get from raw data to the model's inputs, how to reproduce it, the
    environment, and how to load each file."""
    model = loaded.model
    model_class = f"{type(model).__module__}.{type(model).__qualname__}"
    return "\n".join([*_card_head(run, model_class, sum(p.numel() for p in model.parameters()),
                                  chosen, sizes),
                      *_card_metrics(run, chosen, weights, tested, sizes),
                      *_card_inputs(info, inputs), *_card_provenance(run),
                      *_card_files(model_class, checks, inputs, folder.name)])


def _card_head(run: Run, model_class: str, params: int, chosen: str,
               sizes: dict[str, int] | None) -> list[str]:
    dataset = run.flat_config.get("dataset.name")
    files = (run.record.get("data") or {}).get("files") or {}
    lines = [f"# {run.experiment_id}: {run.id}", "",
             f"`{model_class}`, {params:,} parameters, trained by expkit's `{run.experiment_id}` "
             f"experiment{f' on {dataset}' if dataset else ''}. Status: {run.status}.", "",
             "| | |", "|---|---|",
             f"| weights | {chosen} |",
             f"| selected by | {run.metrics.get('monitor', '?')} ({run.metrics.get('mode', '?')}) |"]
    if sizes:
        lines.append("| examples | " + ", ".join(f"{n:,} {s}" for s, n in sizes.items()) + " |")
    return lines + [f"| data file | `{path}` sha256 `{digest[:16]}…` |" for path, digest in files.items()]


def _card_metrics(run: Run, chosen: str, weights: Weights, tested: dict[str, float] | None,
                  sizes: dict[str, int] | None) -> list[str]:
    """The test metrics of the exported weights, evaluated at export; beside them the group's
    interval, when the weights are those each seed of the group was tested with (the best)."""
    lines = ["", "## Test metrics", ""]
    if not tested:
        return [*lines, "No test metrics: the experiment's data has no test split."]
    group = run.record.get("group")
    in_group = weights == "best" and isinstance(group, dict) and bool(group.get("name"))
    lines += [f"Of the weights in this folder ({chosen}), evaluated at export on the test split "
              f"({(sizes or {}).get('test', '?'):,} examples) with the experiment's metrics.", "",
              "| metric | these weights |" + (" its group: mean ± std [95% interval] (N) |"
                                              if in_group else ""),
              "|---|--:|" + ("--:|" if in_group else "")]
    for name, value in tested.items():
        interval = f" {_group_line(run, name) or '-'} |" if in_group else ""
        lines.append(f"| {name} | {value:.4f} |{interval}")
    if in_group:
        lines += ["", f"The group is `{group['name']}` (`expkit repeat`): each seed's best "  # type: ignore[index]
                  "weights, as tested at the end of its run; the interval is Student's t over "
                  "its finished seeds."]
    return lines


def _card_inputs(info: dict[str, Any], inputs: torch.Tensor | None) -> list[str]:
    """From raw data to the model's inputs: the formula, the shape and dtype, and where the
    constants are."""
    shape = _shape_text(inputs)
    steps = info.get("preprocess") or []
    lines = ["", "## Inputs", ""]
    if steps:
        lines += [f"From raw data: {describe(steps)}. The steps and their constants are in "
                  f"`{PREPROCESSING}` (`scale` divides, `normalize` subtracts the mean and divides "
                  "by the std, `reshape` gives each example its shape). They are not part of "
                  "model.pt2 or model.onnx: apply them first."]
    else:
        lines += ["The experiment declares no preprocessing (`DataSplits.preprocess`): the model "
                  "takes its inputs as the experiment's dataset gives them."]
    if shape:
        lines += ["", f"The model takes {shape}."]
    return [*lines, ""]


def _shape_text(inputs: torch.Tensor | None) -> str:
    return (f"a `{str(inputs.dtype).removeprefix('torch.')}` tensor of shape "
            f"(N, {', '.join(str(d) for d in inputs.shape[1:])})" if inputs is not None else "")


def _card_provenance(run: Run) -> list[str]:
    env = run.record.get("environment") or {}
    code = run.record.get("code") or {}
    dirty = " with uncommitted changes (code.diff)" if code.get("dirty") else ""
    return ["## Reproduce", "", "```bash", reproduce_command(run), "```", "",
            f"or `expkit reproduce {run.path}`, which runs it again and compares every metric. "
            f"Code: commit `{code.get('commit')}`{dirty}.", "",
            "## Environment", "",
            ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "numpy", "cuda", "cpu", "gpus")
                      if env.get(k)) + f"; trained on {run.record.get('device', '?')}.", ""]


def _card_files(model_class: str, checks: dict[str, Check | None], inputs: torch.Tensor | None,
                here: str) -> list[str]:
    """How to load each file (`here`: the folder's name; the snippets run beside it)."""
    shape = _shape_text(inputs)
    lines = ["## Files, and how to load them", ""]
    if "safetensors" in checks:
        lines += [f"- `model.safetensors`: the weights (a state dict of `{model_class}`). "
                  "Rebuilt with the experiment's code installed:", "", "  ```python",
                  "  import expkit", f'  model = expkit.load_export("{here}")', "  ```", ""]
    if "pt2" in checks:
        lines += ["- `model.pt2`: a `torch.export` program (any batch size), no experiment code "
                  "needed:", "", "  ```python", "  import torch",
                  f'  model = torch.export.load("{here}/model.pt2").module()',
                  f"  outputs = model(x)  # x: {shape}", "  ```", ""]
    if "onnx" in checks:
        lines += ["- `model.onnx`: ONNX (any batch size), for onnxruntime and other runtimes:", "",
                  "  ```python", "  import onnxruntime",
                  f'  session = onnxruntime.InferenceSession("{here}/model.onnx")',
                  f'  outputs = session.run(None, {{"input": x}})[0]  # x: {shape}, as NumPy',
                  "  ```", ""]
    lines += [f"- `{PREPROCESSING}`: from raw data to the model's inputs (see Inputs); "
              f"`config.json`: the run's arguments; `{DATA_INFO}`: what the dataset told the "
              "model (classes, input shape, its state).", ""]
    done = [(n, c) for n, c in checks.items() if c is not None]
    if done:
        lines += [f"Checked at export on {done[0][1].examples} test examples, the largest "
                  "|difference| from PyTorch's outputs: "
                  + ", ".join(f"{FILES[n]} {c.max_difference:.3g}" for n, c in done)
                  + f" (the export fails beyond {TOLERANCE_TEXT}).", ""]
    return lines
