"""How a raw input becomes the model's input, written down as data: a list of steps, each a
JSON object, so that an export can be used without expkit (numbers any runtime can apply).

    DataSplits(..., preprocess=[scale(255), normalize(0.2860, 0.3530), reshape((1, 28, 28))])

The steps are applied in order to a float32 array whose first axis is the examples:

- `{"op": "scale", "divide_by": d}`: x / d
- `{"op": "normalize", "mean": m, "std": s}`: (x - m) / s; m and s one number or one per feature
- `{"op": "reshape", "shape": [...]}`: each example to that shape
- `{"op": "vocabulary", "tokens": [...]}`: each raw token (a character) to its index, int64
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Step = dict[str, Any]


def scale(divide_by: float) -> Step:
    """Raw values divided by `divide_by` (e.g. 255 for 8-bit pixels)."""
    return {"op": "scale", "divide_by": float(divide_by)}


def normalize(mean: float | Sequence[float], std: float | Sequence[float]) -> Step:
    """(x - mean) / std, with one number for all, or one per feature (the last axis)."""
    def plain(v: float | Sequence[float]) -> float | list[float]:
        return float(v) if isinstance(v, (int, float)) else [float(x) for x in v]

    return {"op": "normalize", "mean": plain(mean), "std": plain(std)}


def reshape(shape: Sequence[int]) -> Step:
    """Each example reshaped to `shape` (e.g. (1, 28, 28): a channel axis added)."""
    return {"op": "reshape", "shape": [int(d) for d in shape]}


def vocabulary(tokens: Sequence[str]) -> Step:
    """Each raw token (a character) to its index in `tokens`."""
    return {"op": "vocabulary", "tokens": list(tokens)}


def apply(steps: Sequence[Step], raw: Any) -> np.ndarray[Any, Any]:
    """The model's inputs from `raw` (an array of examples, or a string for a vocabulary),
    the steps applied in order: the reference for what the card and preprocessing.json say."""
    if steps and steps[0]["op"] == "vocabulary":
        index = {t: i for i, t in enumerate(steps[0]["tokens"])}
        return np.array([index[t] for t in raw], dtype=np.int64)
    x: np.ndarray[Any, Any] = np.asarray(raw).astype(np.float32)
    for step in steps:
        op = step["op"]
        if op == "scale":
            x = x / np.float32(step["divide_by"])
        elif op == "normalize":
            x = (x - np.asarray(step["mean"], np.float32)) / np.asarray(step["std"], np.float32)
        elif op == "reshape":
            x = x.reshape(len(x), *step["shape"])
        else:
            raise ValueError(f"unknown preprocessing step {op!r}")
    return x


def describe(steps: Sequence[Step]) -> str:
    """One line a person can apply: "x = (raw / 255 - 0.286) / 0.353, reshaped to (1, 28, 28)"."""
    if not steps:
        return ""
    if steps[0]["op"] == "vocabulary":
        return (f"each character to its index in the vocabulary of {len(steps[0]['tokens'])} "
                "tokens (preprocessing.json), as int64")
    formula, shape = "raw", ""
    for step in steps:
        if step["op"] == "scale":
            formula = f"{formula} / {step['divide_by']:g}"
        elif step["op"] == "normalize":
            per = isinstance(step["mean"], list)
            mean = "mean" if per else f"{step['mean']:.6g}"
            std = "std" if per else f"{step['std']:.6g}"
            formula = f"({formula} - {mean}) / {std}"
            if per:
                formula += f" (mean and std per feature, {len(step['mean'])} each: preprocessing.json)"
        elif step["op"] == "reshape":
            shape = f", each example reshaped to ({', '.join(str(d) for d in step['shape'])})"
    return f"x = {formula}, as float32{shape}"
