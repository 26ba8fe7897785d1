"""`new NAME`: a scaffolded experiment passes ruff and strict mypy, trains at once, and joins
the suite's registry walk; a bad NAME writes nothing."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, _clean_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_new_writes_a_checked_experiment_that_trains_and_joins_the_walk(tmp_path: Path) -> None:
    project = tmp_path / "project"  # a copy of the project: `new` edits its registry
    project.mkdir()
    for part in ("src", "tests", "run.py", "pyproject.toml"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
        copy(REPO / part, project / part)
    env = {**_clean_env(tmp_path), "PYTHONPATH": str(project / "src")}

    def run(*argv: str, tool: str = "") -> subprocess.CompletedProcess[str]:
        cmd = [str(BIN / tool)] if tool else [sys.executable, str(project / "run.py")]
        return subprocess.run([*cmd, *argv], cwd=project, env=env, capture_output=True, text=True,
                              timeout=600)

    made = run("new", "my_task", "--template=regression")
    assert made.returncode == 0, made.stderr
    written = project / "src" / "lab" / "experiments" / "my_task.py"
    assert written.is_file() and f"{written}" in made.stdout and "--experiment_id=my_task" in made.stdout
    registry = (project / "src" / "lab" / "registry.py").read_text()
    assert '"my_task": "lab.experiments.my_task:MyTaskExperiment",\n}' in registry
    assert run("new", "my_digits", "--template=classification").returncode == 0

    before = _digest(project)
    for bad, says in ((["new", "my_task"], "registered already"),
                      (["new", "9lives"], "lowercase Python identifier"),
                      (["new", "class"], "lowercase Python identifier"),
                      (["new", "odd", "--template=vision"],
                       "--template: got 'vision': Input should be 'classification' or 'regression'")):
        refused = run(*bad)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert _digest(project) == before, "a refused `new` writes nothing"

    files = [str(written), str(written.with_name("my_digits.py"))]
    lint = run("check", *files, tool="ruff")
    assert lint.returncode == 0, lint.stdout
    cache = tmp_path / "mypy"
    if (REPO / ".mypy_cache").is_dir():  # `make lint`'s cache: torch's stubs analysed already
        shutil.copytree(REPO / ".mypy_cache", cache)  # (a cold cache: ~60 s of CPU here)
    types = run("--strict", "--cache-dir", str(cache), *files, tool="mypy")
    assert types.returncode == 0, types.stdout

    shown = run("--experiment_id=my_task", "--help")
    assert shown.returncode == 0 and "diabetes" not in shown.stdout, "no other experiment's name"
    assert "--model {mlp,linear}" in shown.stdout

    trained = run("--experiment_id=my_task", "--epochs=1")
    assert trained.returncode == 0, trained.stderr
    [run_dir] = (project / "results" / "my_task").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["monitor"] == "val_r2" and metrics["mode"] == "max"
    assert set(metrics["test"]) == {"test_loss", "test_mae", "test_mse", "test_r2"}
    assert all(math.isfinite(v) for v in metrics["test"].values())

    # the suite's walk of the registry picks both up (what it then runs, my_task just did)
    walk = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p",
                           "no:cacheprovider", "-o", "addopts=", "tests/test_registry.py", "-k",
                           "registered and my_"],
                          cwd=project, env={**env, "CI": os.environ.get("CI", "")},
                          capture_output=True, text=True, timeout=600)
    collected = [line for line in walk.stdout.splitlines() if "::" in line]
    assert walk.returncode == 0 and len(collected) == 2, walk.stdout[-2000:]
    assert any("my_task" in line for line in collected) and any("my_digits" in line for line in collected)


def _without_module_docstring(code: str) -> str:
    return code[code.index('"""', 3) + 3:]


def test_the_diabetes_example_is_the_regression_template() -> None:
    """src/lab/experiments/diabetes.py is what `new diabetes --template=regression` writes, its
    module docstring aside: the example and the template cannot drift apart."""
    from expkit.cli.scaffold import render

    written = render("regression", "diabetes")
    example = (REPO / "src" / "lab" / "experiments" / "diabetes.py").read_text()
    assert _without_module_docstring(example) == _without_module_docstring(written)
