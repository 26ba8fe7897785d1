"""An export's model card (README.md) and the names an export folder's files go by: what was
trained on what, the test metrics of the weights it holds (with the group's mean ± std [95%
interval] when the run is one seed of a repeat), how raw data becomes the model's inputs, how
to reproduce it, the environment, and how to load each file; and the check each exported
program passes (its tolerance)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from expkit.data.preprocess import describe
from expkit.engine.loading import DATA_INFO, LoadedRun
from expkit.reports.report import reproduce_command
from expkit.rundir.groups import Group
from expkit.rundir.results import Run, group_members
from expkit.utils.stats import Summary

Weights = Literal["best", "last", "ema", "swa"]
FILES: dict[str, str] = {"safetensors": "model.safetensors", "pt2": "model.pt2", "onnx": "model.onnx"}
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
