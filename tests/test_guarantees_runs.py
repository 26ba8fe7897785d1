"""The guarantee code that needs a run or a process group, in this process and fast: resume,
reproduce, and the collectives behind the rank-0 rule. `make mutants` runs these against
mutants of resume.py, reproduce.py and distributed.py (tests/mutants_run.py picks them); the
end-to-end tests check the same guarantees through the CLI. The heartbeat and evaluation:
test_guarantees_life.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import Workspace, _clean_env, write_idx_set
from expkit.config.registry import Registry
from expkit.engine.reproduce import comparable_metrics, drift_warnings, reproduce_run
from expkit.engine.resume import read_run_config, resume_run, unsafe_changes
from expkit.errors import ExpkitError, UsageError
from expkit.training.callbacks import Callback
from expkit.training.checkpoint import LAST, load_checkpoint, save_checkpoint
from expkit.training.distributed import SINGLE, env_rank, setup, teardown
from lab.experiments.mnist import MnistExperiment

REGISTRY = Registry.from_module("lab.registry")

# ---- resume and reproduce, on a real (tiny) run ----------------------------------------------

TINY_RUN = ("--experiment_id=mnist", "--epochs=2", "--max_train_samples=120", "--seed=4",
            "--hidden_sizes=[8]", "--use_cuda=false")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    """A workspace with a finished 2-epoch run (the template each test copies)."""
    tmp = tmp_path_factory.mktemp("guarantees")
    ws = Workspace(tmp / "ws", _clean_env(tmp))
    write_idx_set(ws.cache / "mnist", n_train=150, n_test=40)
    done = ws.run(*TINY_RUN)
    assert done.returncode == 0, done.stderr
    return ws, ws.last_run()


@pytest.fixture
def run_copy(finished_run: tuple[Workspace, Path]) -> tuple[Workspace, Path]:
    """A copy of the finished run, beside it, that a test may change."""
    ws, run = finished_run
    copy = run.with_name(f"{run.name}-{os.urandom(4).hex()}")
    shutil.copytree(run, copy)
    return ws, copy


def test_resume_accepts_only_changes_that_keep_what_was_trained() -> None:
    old = {"epochs": 2, "lr": 0.1, "trainer": {"use_wandb": False, "progress": None,
                                               "early_stopping_patience": None, "precision": "32"}}
    safe = {"epochs": 9, "lr": 0.1, "trainer": {"use_wandb": True, "progress": True,
                                                "early_stopping_patience": 3, "precision": "32"}}
    assert unsafe_changes(old, safe, {}) == []
    unsafe = {"epochs": 2, "lr": 0.2, "trainer": {"use_wandb": False, "progress": None,
                                                  "early_stopping_patience": None,
                                                  "precision": "bf16"}, "new": 1}
    assert unsafe_changes(old, unsafe, {("trainer", "precision"): "precision"}) == [
        "--lr: was 0.1, now 0.2", "--new: was None, now 1", "--precision: was '32', now 'bf16'"]


def test_a_folder_that_is_not_a_run_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"not a run directory \(no config.json\)"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ExpkitError, match=r"config\.json: unreadable"):
        read_run_config(tmp_path)
    for text in ("[1]", '{"epochs": 2}'):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ExpkitError, match=r"not an expkit config \(no experiment_id\)"):
            read_run_config(tmp_path)
    (tmp_path / "config.json").write_text('{"experiment_id": "mnist"}')
    assert read_run_config(tmp_path) == {"experiment_id": "mnist"}


def _in(ws: Workspace, call: Any) -> Any:
    """`call()` with the workspace as working directory and environment (its config.yaml)."""
    saved, cwd = dict(os.environ), os.getcwd()
    try:
        os.environ.clear()
        os.environ.update(ws.env)
        os.chdir(ws.root)
        return call()
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)


def test_resume_of_a_finished_run_does_nothing_and_longer_trains_on(
        run_copy: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ws, run = run_copy
    rows = (run / "history.csv").read_text()
    assert _in(ws, lambda: resume_run(run, [], REGISTRY, "run.py")) == 0
    assert "already finished after 2 epochs; nothing to do" in capsys.readouterr().out
    assert (run / "history.csv").read_text() == rows and "resumes" not in _record(run)
    assert _in(ws, lambda: resume_run(run, ["--epochs=1"], REGISTRY, "run.py")) == 0
    assert "already finished after 2 epochs" in capsys.readouterr().out, "fewer epochs: done too"
    assert _in(ws, lambda: resume_run(run, ["--epochs=3"], REGISTRY, "run.py")) == 0
    assert load_checkpoint(run / "checkpoints" / LAST)["epoch"] == 3
    assert (run / "history.csv").read_text().startswith(rows) and _record(run)["resumes"][0][
        "argv"] == ["resume", str(run), "--epochs=3"]
    record = _record(run)
    record["status"] = "stopped"  # stopped at its last epoch's end: nothing left but the test
    (run / "run.json").write_text(json.dumps(record))
    assert _in(ws, lambda: resume_run(run, [], REGISTRY, "run.py")) == 0
    assert _record(run)["status"] == "finished" and len(_record(run)["resumes"]) == 2
    record = _record(run)
    record["status"] = "failed"  # e.g. it failed in the test after its last epoch: test again
    (run / "run.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert _in(ws, lambda: resume_run(run, [], REGISTRY, "run.py")) == 0
    assert "already finished" not in capsys.readouterr().out
    assert _record(run)["status"] == "finished" and len(_record(run)["resumes"]) == 3


def test_resume_refuses_unsafe_changes_and_checkpoints_of_other_runs(
        run_copy: tuple[Workspace, Path]) -> None:
    ws, run = run_copy
    with pytest.raises(UsageError) as changed:
        _in(ws, lambda: resume_run(run, ["--lr=0.5", "--epochs=3"], REGISTRY, "run.py"))
    assert changed.value.lines == ("cannot change on resume: --lr: was 0.001, now 0.5",)
    assert changed.value.hint and "--epochs" in changed.value.hint
    last = run / "checkpoints" / LAST
    state = load_checkpoint(last)
    for other in ("fashion_cnn", "zebra"):  # ids before and after 'mnist'
        save_checkpoint(last, {**state, "experiment_id": other})
        with pytest.raises(ExpkitError, match=f"written by experiment '{other}', but this run is "
                                              "'mnist'"):
            _in(ws, lambda: resume_run(run, ["--epochs=3"], REGISTRY, "run.py"))
    save_checkpoint(last, {**state, "config": {**state["config"], "seed": 5}})
    with pytest.raises(ExpkitError, match=r"written with other arguments than config\.json: "
                                          r"--seed: was 5, now 4"):
        _in(ws, lambda: resume_run(run, ["--epochs=3"], REGISTRY, "run.py"))
    last.unlink()
    with pytest.raises(ExpkitError, match=r"no checkpoints/last\.pt to resume from"):
        _in(ws, lambda: resume_run(run, ["--epochs=3"], REGISTRY, "run.py"))


def test_reproduce_compares_final_best_and_test_values_and_the_best_epoch() -> None:
    metrics = {"final": {"epoch": 2, "val_acc": 0.5, "epoch_time": 1.0}, "best": {"val_acc": 0.6},
               "test": {"test_acc": 0.7}, "best_epoch": 1, "epochs_run": 2, "train_seconds": 3.0,
               "weights_epoch": None}
    assert comparable_metrics(metrics) == {"final.epoch": 2, "final.val_acc": 0.5,
                                           "best.val_acc": 0.6, "test_acc": 0.7,
                                           "best_epoch": 1, "epochs_run": 2}
    assert comparable_metrics({"best_epoch": None, "test": None}) == {}


def test_reproduce_warns_of_code_and_version_drift(tmp_path: Path) -> None:
    from expkit.rundir.provenance import environment, git_state

    # a repository of its own, with a commit and an uncommitted change (a code.diff)
    folder = tmp_path / "code"
    folder.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(folder)]
    (folder / "exp.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "exp.py"], ["commit", "-qm", "one"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    (folder / "exp.py").write_text("x = 2\n")
    code, _ = git_state(folder)
    assert code.get("commit") and code.get("diff_sha256"), code
    now = environment()
    same = json.loads(json.dumps(  # as read back from run.json: equal values, other objects
        {"code": code, "environment": {k: now[k] for k in ("python", "torch", "numpy", "cuda")}}))
    assert drift_warnings(same, folder) == []
    other = {"code": {**code, "commit": "0" * 40},
             "environment": {**same["environment"], "torch": "1.0", "python": "2.7"}}
    assert drift_warnings(other, folder) == [
        f"code: recorded commit {'0' * 40}, now {code.get('commit')}",
        "python: recorded 2.7, now " + now["python"], "torch: recorded 1.0, now " + now["torch"]]
    edited = {**same, "code": {**code, "diff_sha256": "edited"}}
    assert drift_warnings(edited, folder) == [
        "code: uncommitted changes differ from the recorded code.diff"]


@pytest.mark.slow  # several runs or processes: `make test`, not test-fast
def test_reproduce_matches_a_run_and_names_every_value_that_differs(
        run_copy: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ws, run = run_copy
    record = _record(run)
    record["environment"]["numpy"] = "0.1"  # recorded with another NumPy: said before the run
    (run / "run.json").write_text(json.dumps(record))
    assert _in(ws, lambda: reproduce_run(run, 0.0, REGISTRY, "run.py")) == 0
    out = capsys.readouterr().out
    assert "every metric matches" in out and "differs" not in out
    assert out.startswith("warning: numpy: recorded 0.1, now "), out[:200]
    again = ws.last_run()
    assert _record(again)["reproduction"] == {"of": str(run), "tolerance": 0.0, "all_match": True,
                                              "differs": []}
    metrics = json.loads((run / "metrics.json").read_text())
    was = metrics["best"]["val_loss"], metrics["final"]["val_acc"], metrics["test"]["test_loss"]
    metrics["best"]["val_loss"] += 0.5
    metrics["final"]["val_acc"] -= 0.25
    metrics["test"]["test_loss"] -= 1e-3
    now = metrics["best"]["val_loss"], metrics["final"]["val_acc"], metrics["test"]["test_loss"]
    edge = max(abs(a - b) for a, b in zip(was, now, strict=True))  # the largest change, as a float
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert _in(ws, lambda: reproduce_run(run, 0.0, REGISTRY, "run.py")) == 1
    out = capsys.readouterr().out
    assert re.search(r": 3 of \d+ metrics differ$", out, re.M), out
    assert re.search(r"^test_loss +[\d.]{1,8} +[\d.]{1,8} +differs$", out, re.M), \
        "values in the table with 6 significant digits"
    again = ws.last_run()
    assert _record(again)["reproduction"]["differs"] == ["best.val_loss", "final.val_acc",
                                                         "test_loss"]
    assert _in(ws, lambda: reproduce_run(run, 0.3, REGISTRY, "run.py")) == 1  # 0.5 > 0.3
    again = ws.last_run()
    assert _record(again)["reproduction"]["differs"] == ["best.val_loss"], "0.25 and 1e-3 are within"
    assert _in(ws, lambda: reproduce_run(run, edge, REGISTRY, "run.py")) == 0, "within, at the edge"
    metrics["test"]["test_extra"] = 1.0  # recorded, and not reproduced: a difference too
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert _in(ws, lambda: reproduce_run(run, edge, REGISTRY, "run.py")) == 1
    again = ws.last_run()
    assert _record(again)["reproduction"]["differs"] == ["test_extra"]
    (run / "metrics.json").unlink()
    with pytest.raises(ExpkitError, match=r"has no metrics\.json .* resume it with `run\.py resume"):
        _in(ws, lambda: reproduce_run(run, 0.0, REGISTRY, "run.py"))


class _StopAtOnce(Callback):
    """Asks the loop to stop after its first step, as a Ctrl-C would."""

    def on_train_batch_end(self, trainer: Any, batch_index: int) -> None:
        trainer.stop_requested = "SIGINT"


class StoppedMnist(MnistExperiment):
    """mnist, stopped after its first step."""

    def build_callbacks(self, run_dir: Path) -> list[Callback]:
        return [_StopAtOnce()]


def test_reproduce_of_a_run_that_stops_returns_its_code_without_a_verdict(
        run_copy: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ws, run = run_copy
    stopping = Registry({"mnist": f"{__name__}:StoppedMnist"})
    assert _in(ws, lambda: reproduce_run(run, 0.0, stopping, "run.py")) == 130
    assert "metrics differ" not in capsys.readouterr().out
    again = ws.last_run()
    assert again != run and _record(again)["status"] == "stopped"
    assert "reproduction" not in _record(again), "no verdict on a run that did not finish"


def _record(run: Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_text())  # type: ignore[no-any-return]


# ---- the process group: one process, and two ranks over gloo ---------------------------------


def test_one_process_is_rank_0_of_1_and_every_collective_is_a_no_op(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SINGLE.rank = 1  # type: ignore[misc]  # the shared one-process Dist stays what it is
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert setup(False) is SINGLE and env_rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert setup(False) is SINGLE
    monkeypatch.setenv("RANK", "3")
    assert env_rank() == 3
    assert (SINGLE.rank, SINGLE.local_rank, SINGLE.world_size) == (0, 0, 1), "device 0, alone"
    assert SINGLE.is_main and not SINGLE.enabled and SINGLE.shard() == (0, 1)
    assert SINGLE.record() == {"world_size": 1, "backend": None}
    tensor = torch.tensor([2.0])
    assert SINGLE.all_sum(tensor) is tensor and tensor.item() == 2.0
    assert SINGLE.any_flag(2) == 2 and SINGLE.from_main("mine") == "mine"
    SINGLE.barrier()
    teardown()  # nothing to leave: no error


def rank_main(rank: int, port: int, out: str) -> None:
    """One of two ranks (a forked process): join over gloo, use every collective, leave."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    here = setup(False)
    seen = {"rank": here.rank, "world": here.world_size, "main": here.is_main,
            "enabled": here.enabled, "shard": list(here.shard()), "record": here.record(),
            "sum": here.all_sum(torch.tensor([rank + 1.0, 10.0])).tolist(),
            "flag": here.any_flag(2 if rank == 1 else 0),
            "from_main": here.from_main({"dir": f"made by rank {rank}"})}
    here.barrier()
    teardown()
    seen["left"] = not torch.distributed.is_initialized()
    Path(out).write_text(json.dumps(seen))


@pytest.mark.slow  # several runs or processes: `make test`, not test-fast
def test_two_ranks_agree_on_sums_flags_and_rank_0s_values(tmp_path: Path) -> None:
    from forked import run_ranks

    seen = run_ranks(rank_main, 2, tmp_path)
    assert [s["rank"] for s in seen] == [0, 1] and [s["main"] for s in seen] == [True, False]
    for s in seen:
        assert s["world"] == 2 and s["enabled"] and s["shard"] == [s["rank"], 2]
        assert s["record"] == {"world_size": 2, "backend": "gloo"}
        assert s["sum"] == [3.0, 20.0] and s["flag"] == 2, "every rank gets the total, the largest"
        assert s["from_main"] == {"dir": "made by rank 0"}, "rank 0's value on every rank"
        assert s["left"]
