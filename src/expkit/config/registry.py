"""Experiment registry: id -> "module:Class", imported only when that experiment is asked for.

Descriptions for `--help` are read from the class docstring with `ast`, so listing the
experiments imports none of them (no torch) and a broken module breaks only itself.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from expkit.errors import ExpkitError, UsageError
from expkit.utils.suggest import closest

ENTRY_POINT_GROUP = "expkit.registries"


class Registry:
    """A table of experiments: ids to "package.module:ClassName" strings."""

    def __init__(self, entries: Mapping[str, str]) -> None:
        self.entries = dict(entries)

    @classmethod
    def from_module(cls, module: str) -> Registry:
        """The registry dict `EXPERIMENTS` of one module, e.g. "lab.registry" (what run.py serves)."""
        return cls(importlib.import_module(module).EXPERIMENTS)

    @staticmethod
    def installed() -> list[Any]:
        """The entry points of every installed registry (`module:EXPERIMENTS` each)."""
        import importlib.metadata  # ~0.05 s: only the `expkit` command pays it, not run.py --help

        return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))

    @classmethod
    def from_entry_points(cls) -> Registry:
        """Every registry installed under the `expkit.registries` entry-point group, merged."""
        entries: dict[str, str] = {}
        for ep in cls.installed():
            for exp_id, target in ep.load().items():
                if exp_id in entries and entries[exp_id] != target:
                    raise ExpkitError(f"experiment id '{exp_id}' is registered twice: "
                                      f"{entries[exp_id]} and {target} (entry point {ep.name})")
                entries[exp_id] = target
        return cls(entries)

    def ids(self) -> list[str]:
        """The registered ids, sorted."""
        return sorted(self.entries)

    def check_id(self, exp_id: str) -> None:
        """Raise a UsageError naming the known ids and the closest match if `exp_id` is unknown."""
        if exp_id not in self.entries:
            close = closest(exp_id, self.ids(), cutoff=0.5)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise UsageError(f"--experiment_id: got {exp_id!r}: unknown experiment{hint}; "
                             f"known: {', '.join(self.ids())}")

    def describe(self, exp_id: str) -> str:
        """First line of the experiment class's docstring, read without importing the module."""
        module, _, name = self.entries[exp_id].partition(":")
        try:
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                return f"(module {module} not found)"
            with open(spec.origin, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (ImportError, OSError, SyntaxError, ValueError) as e:
            return f"(cannot read {module}: {type(e).__name__})"
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                doc = ast.get_docstring(node) or ""
                return doc.strip().splitlines()[0] if doc.strip() else ""
        return f"(class {name} not found in {module})"

    def load(self, exp_id: str) -> Any:
        """Import and return the experiment class for `exp_id`."""
        self.check_id(exp_id)
        module, _, name = self.entries[exp_id].partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except Exception as e:  # a broken experiment must not take the CLI down with a traceback
            raise ExpkitError(f"experiment '{exp_id}' could not be loaded from {module}:{name}: "
                              f"{type(e).__name__}: {e}") from e
