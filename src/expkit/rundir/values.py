"""How config keys and values are named: a nested config flattened to dotted keys, a value as
it is typed on the command line, and a dotted key's flag."""

from __future__ import annotations

import json
from typing import Any


def flatten(config: dict[str, Any], prefix: str = "", sep: str = ".",
            into: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested config -> {"optimizer.lr": 0.001, ...} (lists stay values; `sep` joins the keys;
    `into`: the dict to add them to)."""
    out: dict[str, Any] = {} if into is None else into
    for key, value in config.items():
        if isinstance(value, dict):
            flatten(value, f"{prefix}{key}{sep}", sep, out)
        else:
            out[f"{prefix}{key}"] = value
    return out


def as_typed(value: Any, none: str = "auto") -> str:
    """A config value as it is typed on the command line: true/false, [64,32], auto."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def flag_of(key: str, record: dict[str, Any] | None = None) -> str:
    """The command-line flag of a dotted config key (`scheduler.name` is --scheduler)."""
    flags = (record or {}).get("flags") or {}
    if key in flags:
        return str(flags[key])
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]
