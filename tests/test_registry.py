"""The registry: lazy, tolerant of broken modules, walked so every experiment is tested."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from conftest import Workspace
from expkit.args import Args
from expkit.experiment import ExperimentArgs
from expkit.registry import Registry
from expkit.results import flatten, read_history
from lab.registry import EXPERIMENTS


@pytest.mark.parametrize("experiment_id", sorted(EXPERIMENTS))
def test_every_registered_experiment_runs_an_epoch(data_workspace: Workspace,
                                                   experiment_id: str) -> None:
    result = data_workspace.run(f"--experiment_id={experiment_id}", "--epochs=2",
                                "--max_train_samples=200", "--seed=0")
    assert result.returncode == 0, result.stderr
    run = data_workspace.last_run(experiment_id)
    metrics = json.loads((run / "metrics.json").read_text())
    first, second = read_history(run)
    assert metrics["epochs_run"] == 2 and second["train_loss"] < first["train_loss"], \
        f"{experiment_id} does not learn: train_loss {first['train_loss']} -> {second['train_loss']}"
    assert set(metrics["test"]) == {"test_loss", "test_acc"}
    # every value not given on the command line is the experiment's own default (a flag of a
    # part, --max_train_samples here, does not reset the rest of the part to its class defaults)
    args_class = Registry.from_module("lab.registry").load(experiment_id).args_class
    defaults = flatten(args_class.model_validate({"experiment_id": experiment_id}).model_dump(mode="json"))
    used = flatten(json.loads((run / "config.json").read_text()))
    given = {"epochs", "dataset.max_train_samples", "seed"}
    assert {k: v for k, v in used.items() if k not in given} == \
        {k: v for k, v in defaults.items() if k not in given}


def test_broken_experiment_does_not_break_the_others(tmp_path: Path) -> None:
    (tmp_path / "myreg.py").write_text(
        "EXPERIMENTS = {'good': 'lab.experiments.mnist:MnistExperiment',\n"
        "               'broken': 'brokenexp:Broken'}\n")
    (tmp_path / "brokenexp.py").write_text(
        "import not_a_real_package\n\nclass Broken:\n    '''Never loads.'''\n")

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        code = f"from expkit.cli import main; raise SystemExit(main({list(argv)!r}, registry='myreg'))"
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                              text=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin"})

    listing = cli("--help")
    assert listing.returncode == 0
    assert "good" in listing.stdout and "broken" in listing.stdout and "Never loads." in listing.stdout
    broken = cli("--experiment_id=broken")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "ModuleNotFoundError" in broken.stderr and "brokenexp:Broken" in broken.stderr
    assert cli("--experiment_id=good", "--help").returncode == 0


def test_a_flag_name_used_by_two_parts_fails_at_definition() -> None:
    class PartArgs(Args):
        """A part that reuses a common flag name."""

        epochs: int = Field(3, description="clashes with ExperimentArgs.epochs")

    with pytest.raises(TypeError, match=r"--epochs is declared twice.*'epochs'.*'part.epochs'"):
        class _Clash(ExperimentArgs):
            part: PartArgs = Field(default_factory=PartArgs)  # type: ignore[arg-type]
