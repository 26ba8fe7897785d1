"""`new NAME`: write a working experiment from a commented template and register it.

    python run.py new my_task --template=regression
    python run.py --experiment_id=my_task --epochs=1

The file goes beside the registry's package (`src/lab/experiments/NAME.py` for run.py's
`lab.registry`), and its line is added to the registry's EXPERIMENTS dict. The templates
train at once on data that ships with scikit-learn (no download): `classification` on the
8x8 handwritten digits, `regression` on the diabetes measurements.
"""

from __future__ import annotations

import ast
import importlib.util
import keyword
from pathlib import Path

from expkit.cli.templates import TEMPLATES
from expkit.errors import UsageError
from expkit.utils.files import atomic_write_text


def class_prefix(name: str) -> str:
    """`my_task` -> `MyTask`: the prefix of the classes the template defines."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "New"


def registry_file(module: str) -> Path:
    """The source file of a registry module (`lab.registry` -> .../src/lab/registry.py)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise UsageError(f"registry {module}: no source file found; give --registry MODULE")
    return Path(spec.origin)


def _registry_with(source: str, path: Path, line: str) -> str:
    """The registry's text with `line` added as the last entry of its EXPERIMENTS dict."""
    tree = ast.parse(source)
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Name) and t.id == "EXPERIMENTS" for t in targets) \
                and isinstance(node.value, ast.Dict) and node.value.end_lineno is not None:
            lines = source.splitlines(keepends=True)
            closing = node.value.end_lineno - 1  # the line holding the dict's closing brace
            if lines[closing].strip() != "}":
                break
            return "".join([*lines[:closing], line, *lines[closing:]])
    raise UsageError(f"{path}: no `EXPERIMENTS = {{...}}` dict closed by a line of its own; add "
                     "the experiment's line by hand")


def render(template: str, name: str) -> str:
    """The source `new NAME --template=TEMPLATE` writes: the template with its id and class
    prefix filled in."""
    return TEMPLATES[template].replace("__experiment_id__", name).replace("Template", class_prefix(name))


def new_experiment(name: str, template: str, registry_module: str, registered: list[str]) -> Path:
    """Write `<registry package>/experiments/NAME.py` from `template` and register it; returns
    the file. A bad NAME (not an identifier, taken) is a usage error that writes nothing."""
    if not name.isidentifier() or keyword.iskeyword(name) or name != name.lower():
        raise UsageError(f"new: got {name!r}; NAME must be a lowercase Python identifier "
                         "(letters, digits, underscores; e.g. my_task)")
    if template not in TEMPLATES:
        raise UsageError(f"--template: got {template!r}; choose one of: {', '.join(TEMPLATES)}")
    if name in registered:
        raise UsageError(f"new: an experiment {name!r} is registered already; choose another NAME")
    registry = registry_file(registry_module)
    package = registry_module.rpartition(".")[0]
    target = registry.parent / "experiments" / f"{name}.py"
    if target.exists():
        raise UsageError(f"new: {target} exists already; choose another NAME")
    prefix = class_prefix(name)
    module = f"{package}.experiments.{name}" if package else f"experiments.{name}"
    source = _registry_with(registry.read_text(), registry,
                            f'    "{name}": "{module}:{prefix}Experiment",\n')
    code = render(template, name)
    target.parent.mkdir(exist_ok=True)
    atomic_write_text(target, code)
    atomic_write_text(registry, source)
    return target
