"""The Python door: `expkit.run` and `expkit.resume` take the command line's flags as keyword
arguments, validate them the same way, make the same run directory and record, and leave the
process as they found it, so that runs in one process give the numbers of separate processes."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import expkit
from conftest import Workspace
from expkit.rundir.results import wall_clock
from expkit.training.checkpoint import load_checkpoint

QUICK = {"epochs": 2, "max_train_samples": 200, "hidden_sizes": [16], "progress": False}


@pytest.fixture
def here(data_workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """The workspace as a notebook's working directory and environment."""
    monkeypatch.chdir(data_workspace.root)
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in data_workspace.env.items():
        monkeypatch.setenv(key, value)
    yield data_workspace


def _numbers(run_dir: Path) -> tuple[dict, list[torch.Tensor]]:
    """Every value a run computed (its times aside), and its last weights."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    weights = list(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"].values())
    return {part: {k: v for k, v in metrics[part].items() if not wall_clock(k)}
            for part in ("final", "best", "test")}, weights


@pytest.mark.slow
def test_runs_in_one_process_match_runs_in_their_own(here: Workspace) -> None:
    settings = [{"seed": 0}, {"seed": 1, "deterministic": True, "lr": 0.003}, {"seed": 0}]
    in_process = [expkit.run("mnist", **QUICK, **extra) for extra in settings]
    for run, extra in zip(in_process, settings, strict=True):
        assert isinstance(run, expkit.Run) and run.status == "finished"
        assert run.config["seed"] == extra["seed"] and len(run.history) == 2
        flags = [f"--{k}={json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
                 for k, v in {**QUICK, **extra}.items()]
        alone = here.fork("--experiment_id=mnist", *flags)  # a process of its own
        assert alone.returncode == 0, alone.stderr
        mine, theirs = _numbers(run.path), _numbers(here.last_run())
        assert mine[0] == theirs[0], "every metric, bit for bit"
        assert all(torch.equal(a, b) for a, b in zip(mine[1], theirs[1], strict=True))
    record = json.loads((in_process[0].path / "run.json").read_text())
    assert record["entry"] == "python" and record["status"] == "finished"
    assert "--experiment_id=mnist" in record["command"] and "--hidden_sizes=[16]" in record["command"]
    again = here.cli("reproduce", str(in_process[0].path))
    assert again.returncode == 0 and "every metric matches" in again.stdout, again.stdout


def test_a_run_leaves_the_process_as_it_found_it(here: Workspace, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    import matplotlib

    style = (matplotlib.get_backend(), dict(matplotlib.rcParams))
    loggers = {name: list(logging.getLogger(name).handlers)
               for name in ("", *logging.root.manager.loggerDict)}
    threads, torch_threads = set(threading.enumerate()), torch.get_num_threads()
    # cuDNN's flags as a notebook may have set them (a deterministic run turns both around),
    # and no CUBLAS_WORKSPACE_CONFIG (a deterministic run sets it)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False, warn_only=True)
    run = expkit.run("mnist", **{**QUICK, "epochs": 1}, seed=3, deterministic=True,
                     use_tensorboard=True)
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (True, False)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert run.status == "finished"
    assert set(threading.enumerate()) == threads, "no thread outlives the run (plots, trackers)"
    assert torch.get_num_threads() == torch_threads
    assert (matplotlib.get_backend(), dict(matplotlib.rcParams)) == style
    assert all(logging.getLogger(name).handlers == found for name, found in loggers.items()), \
        "no logging handler added to a logger that existed"
    assert random.getstate() == before[0] and (np.random.get_state()[1] == before[1]).all()
    assert torch.equal(torch.get_rng_state(), before[2])
    assert not torch.are_deterministic_algorithms_enabled()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert torch.is_deterministic_algorithms_warn_only_enabled(), "warn_only put back too"
    torch.use_deterministic_algorithms(False)
    assert "history plot:" not in capsys.readouterr().out, "no plot unless asked"
    assert expkit.resume(run.path).status == "finished"  # done already: nothing to train
    assert "history plot:" not in capsys.readouterr().out, "no plot unless asked"
    more = expkit.resume(run.path, epochs=2, show_plot=True)
    assert f"history plot: {run.path / 'history.png'}" in capsys.readouterr().out
    assert more.path == run.path and more.status == "finished" and len(more.history) == 2
    # the record's command re-runs the run as it now is (2 epochs), as config.json says
    record = json.loads((run.path / "run.json").read_text())
    assert "--epochs=2" in record["command"] and "--epochs=1" not in record["command"]
    assert json.loads((run.path / "config.json").read_text())["epochs"] == 2
    assert [s["processes"] for s in record["segments"]] == [1, 1]
    loaded = expkit.load_run(more.path)
    assert loaded.epoch in (1, 2) and not loaded.model.training


@pytest.mark.parametrize(("flags", "line"), [
    ({"epochs": 0}, "--epochs: got '0': Input should be greater than or equal to 1"),
    ({"hidden_sizes": [64, 0]}, "--hidden_sizes: got '[64,0]' (item 2)"),
    ({"epoch": 3}, "unknown flag --epoch (did you mean --epochs?)"),
])
def test_bad_keywords_are_the_command_lines_usage_errors(here: Workspace, flags: dict,
                                                          line: str) -> None:
    with pytest.raises(expkit.UsageError) as caught:
        expkit.run("mnist", **flags)
    assert line in str(caught.value)
    shell = here.fork("--experiment_id=mnist", *expkit_flags(flags))
    assert shell.returncode == 2 and line in shell.stderr, shell.stderr
    assert not (here.root / "results").exists(), "nothing written"
    with pytest.raises(expkit.UsageError, match="did you mean 'mnist'"):
        expkit.run("mnsit")


def expkit_flags(flags: dict) -> list[str]:
    from expkit.engine.api import as_flags

    return as_flags(flags)


def test_an_args_instance_and_an_experiment_class(here: Workspace) -> None:
    from lab.experiments.mnist import MnistArgs, MnistExperiment

    args = MnistArgs.model_validate({"experiment_id": "mnist", "epochs": 1, "seed": 5,
                                     "dataset": {"max_train_samples": 100}})
    run = expkit.run(args, progress=False)
    assert run.config["epochs"] == 1 and run.config["dataset"]["max_train_samples"] == 100
    sources = run.record["sources"]
    assert sources["epochs"] == "the Args given" and sources["trainer.progress"] == "cli", sources
    by_class = expkit.run(MnistExperiment, epochs=1, seed=5, max_train_samples=100, progress=False)
    assert by_class.experiment_id == "mnist"
    assert _numbers(by_class.path)[0] == _numbers(run.path)[0]
