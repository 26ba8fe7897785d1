"""The layering of src/expkit, read from its imports (every import: module level, inside
functions, and under TYPE_CHECKING), as src/expkit/__init__.py and each package's docstring
state it."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "expkit"

#: packages bottom to top: a module imports only from its own package and those ranked lower
RANK = {"errors": 0, "utils": 0, "config": 1, "rundir": 2, "reports": 3, "data": 4, "models": 4,
        "training": 5, "tracking": 6, "engine": 7, "slurm": 8, "sweep": 9, "repeat": 9, "cli": 10,
        "__main__": 11}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports (a module, or the package a name comes from)
    line: int
    top: bool  # at module level, outside `if TYPE_CHECKING:` (runs when the module is imported)


def module_name(path: Path) -> str:
    """`expkit.training.loop` for src/expkit/training/loop.py, `expkit.cli` for its __init__."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # `from expkit.data import augment` imports the module expkit.data.augment
        return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names]
    return []


def imports_of(module: str) -> list[Import]:
    """Every import statement in `module`, relative ones refused (the tree uses none)."""
    tree = ast.parse(MODULES[module].read_text())
    found: list[Import] = []

    def walk(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom) and child.level:
                raise AssertionError(f"{module}:{child.lineno}: relative import")
            for target in _targets(child):
                found.append(Import(module, target, child.lineno, top))
            type_only = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            walk(child, top and not type_only and not nested)

    walk(tree, True)
    return found


GRAPH = {m: [i for i in imports_of(m) if i.target.startswith("expkit.") or i.target == "expkit"]
         for m in MODULES}


def package_of(module: str) -> str:
    """The package a module belongs to: `training` for expkit.training.loop, `errors` for
    expkit.errors, `` for expkit itself."""
    return module.split(".")[1] if "." in module else ""


def test_the_top_level_holds_only_the_public_face_main_and_errors() -> None:
    modules = sorted(p.name for p in ROOT.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "errors.py"]
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    assert set(packages) == set(RANK) - {"errors", "__main__"}, "a package with no rank here"
    for package in packages:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert (doc and "Imports:" in doc) or (package == "cli" and doc), \
            f"expkit/{package}/__init__.py: a docstring saying what it owns and may import"


def test_no_import_cycles_not_even_for_type_hints() -> None:
    edges = {m: sorted({i.target for i in imports if i.target in MODULES and i.target != m})
             for m, imports in GRAPH.items()}
    edges["expkit"] = []  # the public face imports its names lazily; checked below
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in edges[module]:
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_each_package_imports_only_itself_and_the_packages_below_it() -> None:
    wrong = []
    for module, imports in GRAPH.items():
        here = package_of(module)
        if here == "":
            continue  # the public face names everything
        for imp in imports:
            there = package_of(imp.target)
            if there == "":
                wrong.append(f"{module}:{imp.line} imports expkit itself (import the module instead)")
            elif there != here and RANK[there] > RANK[here]:
                wrong.append(f"{module}:{imp.line} ({here}) imports {imp.target} ({there}, a higher layer)")
    assert not wrong, "\n".join(wrong)


def test_the_loop_knows_no_run_directory_command_line_or_report() -> None:
    """The rule the training package's docstring states, spelled out (RANK implies it)."""
    forbidden = ("expkit.cli", "expkit.engine.", "expkit.reports", "expkit.rundir", "expkit.tracking",
                 "expkit.sweep", "expkit.slurm")
    found = [f"{i.module}:{i.line} imports {i.target}" for m, imports in GRAPH.items()
             if m.startswith("expkit.training") for i in imports
             if i.target.startswith(forbidden) or i.target == "expkit.engine"]
    assert not found, "\n".join(found)


def _top_level_closure(start: str) -> set[str]:
    """Every module (expkit's and others') that importing `start` imports at once."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module not in MODULES:
            continue
        parents = [".".join(module.split(".")[:k]) for k in range(1, module.count(".") + 1)]
        todo += [p for p in parents if p in MODULES]  # a package's __init__ runs first
        todo += [i.target for i in imports_of(module) if i.top]
    return seen


@pytest.mark.parametrize("entry", ["expkit.cli", "expkit.__main__", "expkit.rundir.results",
                                   "expkit.reports.report", "expkit"])
def test_the_command_line_and_the_reports_import_no_torch_at_module_level(entry: str) -> None:
    heavy = {m for m in _top_level_closure(entry)
             if m.split(".")[0] in ("torch", "numpy", "optuna", "mlflow", "wandb", "lab")}
    assert not heavy, f"importing {entry} imports {sorted(heavy)} at module level"


def test_expkit_never_imports_lab() -> None:
    found = [f"{m}:{i.line}" for m in MODULES for i in imports_of(m) if i.target.split(".")[0] == "lab"]
    assert not found, "expkit imports the example package lab: " + ", ".join(found)


def test_the_public_face_names_resolve_to_their_modules() -> None:
    """`from expkit import X` for every name expkit exports: the lazy table points at a module
    that defines X (a test that would catch a name moved without its entry)."""
    tree = ast.parse((ROOT / "__init__.py").read_text())
    homes: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("expkit."):
            homes.update({a.name: node.module for a in node.names})
    import expkit

    assert set(homes) == set(expkit._HOME), "the TYPE_CHECKING imports and _HOME disagree"
    assert set(expkit.__all__) == {*homes, "__version__"}, "__all__ and the imports disagree"
    for name, module in homes.items():
        assert expkit._HOME[name] == module, name
        assert name in expkit.__all__
    for name in ("runs", "load_run", "BaseExperiment", "Callback", "Tracker", "Args"):
        assert getattr(expkit, name) is getattr(__import__(homes[name], fromlist=[name]), name)
    assert callable(expkit.runs), "no package may shadow expkit.runs()"
    import expkit.engine.runner  # the package beside the functions
    assert callable(expkit.run) and callable(expkit.resume), "nor expkit.run() and expkit.resume()"


def test_the_public_names_are_what_user_code_needs_and_each_says_what_it_is_for() -> None:
    """The loop's own pieces (its console line, the tracking callback, the built-in trackers,
    file helpers) are internals: reachable through their modules, not `expkit`. One version
    attribute: `expkit.__version__`."""
    import inspect

    import expkit

    for internal in ("ConsoleLine", "Console", "Tracking", "LocalFiles", "WandbTracker",
                     "MlflowTracker", "TensorBoardTracker", "version"):
        assert internal not in expkit.__all__ and not hasattr(expkit, internal), internal
    assert expkit.__version__[0].isdigit()
    undocumented = [name for name in expkit.__all__ if name != "__version__"
                    and (callable(getattr(expkit, name)) or inspect.ismodule(getattr(expkit, name)))
                    and len(inspect.getdoc(getattr(expkit, name)) or "") < 20]
    assert not undocumented, f"public names without a docstring saying what they are for: {undocumented}"


MAX_FUNCTION_LINES = 60  # a function past this is asking to be split (style.md)


def test_no_function_is_longer_than_a_screen() -> None:
    """Every function and method in src/expkit, decorators aside, fits in 60 lines: a reader
    sees a phase in one sitting (the runner's `_execute` is a dozen named phases)."""
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


def _outside_code() -> dict[str, str]:
    """The code that uses expkit from outside: the lab project, the wild west, the benchmarks,
    run.py, and what `new` writes from each template."""
    from expkit.cli.scaffold import render
    from expkit.cli.templates import TEMPLATES

    repo = SRC.parent
    files = [*(SRC / "lab").rglob("*.py"), *(repo / "wild_west").rglob("*.py"),
             *(repo / "bench").rglob("*.py"), repo / "run.py"]
    code = {str(p.relative_to(repo)): p.read_text() for p in files}
    code |= {f"new --template={name}": render(name, "my_task") for name in TEMPLATES}
    return code


def test_code_outside_the_framework_imports_only_the_public_expkit() -> None:
    """Experiments, templates, scripts and benchmarks import `expkit` itself, never a module
    inside it, so the packages inside can move (and every name they need is public)."""
    import expkit

    internal = []
    for where, source in _outside_code().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("expkit."):
                internal.append(f"{where}:{node.lineno} from {node.module} import ...")
            elif isinstance(node, ast.Import):
                internal += [f"{where}:{node.lineno} import {a.name}" for a in node.names
                             if a.name.startswith("expkit.")]
            if isinstance(node, ast.ImportFrom) and node.module == "expkit":
                internal += [f"{where}:{node.lineno} expkit has no public {a.name}"
                             for a in node.names if a.name not in expkit.__all__]
    assert not internal, "\n".join(internal)
