"""expkit as a library: the wheel and the sdist built from the checkout, the wheel installed
into a fresh venv, and a throwaway project that registers an experiment through the entry
point, trains it with the installed `expkit` command and passes `mypy --strict` on expkit's
own types (py.typed). Offline: the fresh venv gets expkit's dependencies from this venv (its
installed distributions, linked in), and pip resolves against them with no index."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, Workspace

pytestmark = pytest.mark.slow

EXPERIMENT = '''
"""A regression of y = 2x on 256 points: the smallest complete experiment."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from expkit.config.args import Args
from expkit.data.base import DataInfo, DataSplits, Split, split_off
from expkit.engine.experiment import BaseExperiment, ExperimentArgs
from expkit.training.metrics import Declared
from expkit.models.base import BaseModel


class LineArgs(Args):
    """The model's size."""

    hidden: int = Field(8, ge=1, description="hidden units")


class DoubleArgs(ExperimentArgs):
    """The experiment's arguments."""

    model: LineArgs = Field(default_factory=LineArgs)


class Line(BaseModel):
    """An MLP from one number to one number."""

    def __init__(self, args: LineArgs) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One output per input."""
        out: torch.Tensor = self.net(x)
        return out

    def step(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """MSE loss, and the sum of squared errors (-> mse)."""
        x, y = batch
        loss = F.mse_loss(self(x), y)
        return loss, {"mse": loss.detach() * len(y)}


class Double(BaseExperiment[DoubleArgs]):
    """Learn y = 2x."""

    args_class = DoubleArgs
    metrics: ClassVar[Declared] = {"mse": "min"}
    default_monitor = "val_mse"

    def build_data(self) -> DataSplits:
        """256 points of y = 2x, split train/val/test."""
        x = torch.linspace(-1, 1, 256).unsqueeze(1)
        rest, test = split_off(Split(x, 2 * x), 0.25)
        train, val = split_off(rest, 0.2, seed=1)
        return DataSplits(None, (1,), train=train, val=val, test=test)

    def build_model(self, data: DataInfo) -> Line:
        """The MLP."""
        return Line(self.args.model)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "doubling"
version = "0.0.1"
dependencies = ["expkit"]

[project.entry-points."expkit.registries"]
doubling = "doubling.registry:EXPERIMENTS"

[tool.mypy]
strict = true
plugins = ["pydantic.mypy"]   # Field(default_factory=...) and validated fields, typed
'''


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependencies_of(name: str) -> set[str]:
    """The installed distributions `name` needs (its requirements without extras, recursively)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        if _key(dist.metadata["Name"]) in seen:
            continue
        seen.add(_key(dist.metadata["Name"]))
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                todo.append(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0])
    return seen - {_key(name)}


def link_distributions(names: set[str], into: Path) -> None:
    """Each distribution's top-level files and folders (its package, its dist-info), linked."""
    into.mkdir()
    for name in names:
        dist = importlib.metadata.distribution(name)
        base = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = base / top
            if top != ".." and source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_wheel_installs_into_a_fresh_venv_and_serves_a_project_of_its_own(
        workspace: Workspace, tmp_path: Path) -> None:
    env = {**workspace.env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH")  # the installed wheel is under test here, not the tree
    # build from a copy of the checkout's tracked files (nothing is written into the repository)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    checkout = tmp_path / "checkout"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_bytes((REPO / name).read_bytes())
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), "."], checkout, env)
    wheel, sdist = next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))
    tops = {name.split("/")[0] for name in names}
    assert tops == {"expkit", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "expkit/py.typed" in names and b"lab" not in entry_points
    assert {f"expkit/reports/vendor/uplot/{f}" for f in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE")} \
        <= set(names), "the charts' library and its licence ship in the wheel"
    with tarfile.open(sdist) as archive:
        inside = {"/".join(n.split("/")[1:]) for n in archive.getnames()}
    assert {"README.md", "tests/conftest.py", "src/expkit/py.typed", "pyproject.toml",
            "constraints.txt", "src/lab/registry.py"} <= inside, "the sdist rebuilds and tests"

    # a fresh venv: expkit's dependencies linked in from this venv, then the wheel, no index
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = dependencies_of("expkit") | {"setuptools"}  # setuptools: to install the project below
    link_distributions(deps, tmp_path / "deps")
    (site / "deps.pth").write_text(str(tmp_path / "deps") + "\n")
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    run([*pip, "install", "-q", str(wheel)], tmp_path, env)

    project = tmp_path / "doubling"
    (project / "doubling").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "doubling" / "__init__.py").write_text('"""The doubling project."""\n')
    (project / "doubling" / "double.py").write_text(EXPERIMENT)
    (project / "doubling" / "registry.py").write_text(
        '"""The project\'s experiments."""\n\nEXPERIMENTS = {"double": "doubling.double:Double"}\n')
    run([*pip, "install", "-q", "--no-build-isolation", str(project)], tmp_path, env)

    expkit = str(venv / "bin" / "expkit")
    version = run([expkit, "--version"], workspace.root, env).strip()
    assert version == f"expkit {importlib.metadata.version('expkit')}"
    listing = run([expkit, "--help"], workspace.root, env)
    assert "double" in listing and "mnist" not in listing, "only the project's experiments"
    out = run([expkit, "--experiment_id=double", "--epochs=1", "--seed=0"], workspace.root, env)
    assert "test_mse" in out
    record = json.loads(next((workspace.results / "double").glob("*/run.json")).read_text())
    assert record["environment"]["expkit"] == importlib.metadata.version("expkit")
    assert record["status"] == "finished"
    report = next((workspace.results / "double").glob("*/report.html")).read_text()
    assert "leeoniya/uPlot (v1.6.32)" in report and "expkitChart(" in report, "charts from the wheel"
    imported = run([str(python), "-c", "import expkit.cli; print(expkit.cli.__file__)"], tmp_path, env)
    assert str(site) in imported, "the wheel's expkit, not the checkout's"

    # the project type-checks against expkit's own types (py.typed)
    cache = tmp_path / "mypy"
    if (REPO / ".mypy_cache").is_dir():  # `make lint`'s cache: torch's stubs analysed already
        shutil.copytree(REPO / ".mypy_cache", cache)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-executable", str(python),
         "--cache-dir", str(cache), "doubling"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
