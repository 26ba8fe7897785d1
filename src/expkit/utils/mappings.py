"""Reading a YAML or JSON file of settings into a dict, with errors that name the file and line.

PyYAML follows YAML 1.1, where `3e-4` is a string (only `3.0e-4` is a float). Numbers
written that way are read as floats here, so a config file means what it looks like.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from expkit.errors import UsageError

_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e3 / 3e-4 as floats (YAML 1.2 style)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def read_mapping(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """The top-level mapping of a YAML/JSON file (JSON is YAML) and its text; UsageError otherwise."""
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, expected {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file ({what})") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise UsageError(f"{path}: cannot read {what}: {reason}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}, text
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of keys to values ({what}), "
                         f"got a {type(data).__name__}")
    return data, text


def key_line(text: str, key: tuple[str, ...]) -> int | None:
    """1-based line of a nested key in YAML text, for error messages."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    line = None
    for part in key:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def config_yaml(config: dict[str, Any], sources: dict[str, str], indent: str = "",
                prefix: str = "") -> str:
    """The resolved config as YAML, each value commented with where it came from."""
    import json

    lines = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(config_yaml(value, sources, indent + "  ", path + ".").rstrip("\n"))
        else:
            text = json.dumps(value)
            if isinstance(value, float) and "e" in text and "." not in text:
                text = text.replace("e", ".0e")  # 3.0e-05: a float for every YAML reader, not a string
            lines.append(f"{indent}{key}: {text}  # {sources.get(path, 'default')}")
    return "\n".join(lines) + "\n"
