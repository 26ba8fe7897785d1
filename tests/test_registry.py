"""The registry: lazy, tolerant of broken modules, walked so every experiment is tested."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from conftest import Workspace
from expkit.config.args import Args, flag_table
from expkit.config.registry import Registry
from expkit.engine.experiment import ExperimentArgs
from expkit.rundir.results import read_history
from expkit.rundir.values import flatten
from lab.registry import EXPERIMENTS

REGISTRY = Registry.from_module("lab.registry")


@pytest.mark.parametrize("experiment_id", sorted(EXPERIMENTS))
def test_every_registered_experiment_runs_its_smoke_configuration(data_workspace: Workspace,
                                                                 experiment_id: str) -> None:
    """Each experiment, with the quick flags it declares (`smoke_args`): a finished run with
    every file of a run directory, finite test values of every metric it declares, and every
    value not given on the command line the experiment's own default."""
    experiment = REGISTRY.load(experiment_id)
    result = data_workspace.run(f"--experiment_id={experiment_id}", *experiment.smoke_args,
                                "--seed=0")
    assert result.returncode == 0, result.stderr
    run = data_workspace.last_run(experiment_id)
    for name in ("config.json", "run.json", "history.csv", "metrics.json", "report.html",
                 "checkpoints/last.pt", "log.txt"):
        assert (run / name).is_file(), f"{experiment_id}: no {name} in {run}"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    metrics = json.loads((run / "metrics.json").read_text())
    history = read_history(run)
    assert len(history) == metrics["epochs_run"] >= 1
    assert set(metrics["test"]) == {f"test_{name}" for name in experiment.metrics}
    assert all(math.isfinite(v) for v in metrics["test"].values()), metrics["test"]
    if "loss" in experiment.metrics and len(history) >= 2:
        first, last = history[0]["train_loss"], history[-1]["train_loss"]
        assert last < first, f"{experiment_id} does not learn: train_loss {first} -> {last}"
    # a flag of a part (--max_train_samples) does not reset the rest of the part to its defaults
    table = flag_table(experiment.args_class)
    given = {"seed", *(".".join(table[a.split("=")[0].removeprefix("--")].path)
                       for a in experiment.smoke_args)}
    defaults = flatten(experiment.args_class.model_validate(
        {"experiment_id": experiment_id}).model_dump(mode="json"))
    used = flatten(json.loads((run / "config.json").read_text()))
    resolved = {"monitor", "monitor_mode"}  # auto values, written out as the run resolved them
    assert {k: v for k, v in used.items() if k not in given | resolved} == \
        {k: v for k, v in defaults.items() if k not in given | resolved}


def test_broken_experiment_does_not_break_the_others(tmp_path: Path) -> None:
    (tmp_path / "myreg.py").write_text(
        "EXPERIMENTS = {'good': 'lab.experiments.mnist:MnistExperiment',\n"
        "               'broken': 'brokenexp:Broken'}\n")
    (tmp_path / "brokenexp.py").write_text(
        "import not_a_real_package\n\nclass Broken:\n    '''Never loads.'''\n")

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        code = f"from expkit.cli.main import main; raise SystemExit(main({list(argv)!r}, registry='myreg'))"
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
