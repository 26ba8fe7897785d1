"""The guarantee code on its own, in this process and fast: atomic writes, checkpoints, RNG
state, one-line errors, password redaction. `make mutants` mutates these modules and runs this
file against each mutant; the end-to-end tests check the same guarantees through the CLI."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from conftest import REPO, Workspace, _clean_env, write_idx_set
from expkit import files
from expkit.distributed import SINGLE, env_rank, setup, teardown
from expkit.errors import ExpkitError, UsageError, one_line, report
from expkit.registry import Registry
from expkit.reproduce import comparable_metrics, drift_warnings, reproduce_run
from expkit.resume import read_run_config, resume_run, unsafe_changes
from expkit.sweep_space import redact
from expkit.training.checkpoint import (
    BEST,
    LAST,
    Checkpointing,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

REGISTRY = Registry.from_module("lab.registry")

# ---- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_whole_with_the_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    files.atomic_write(target, lambda f: f.write(b"new contents"))
    assert target.read_bytes() == b"new contents"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask, "a group can read results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_write_fsyncs_a_temp_file_beside_the_target_then_renames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "run.json"
    files.atomic_write(target, lambda f: f.write(b"{}"))
    (fsynced, temp), (renamed, source) = events
    assert (fsynced, renamed) == ("fsync", "replace") and temp == source, events
    assert Path(temp).parent == tmp_path and Path(temp).name.startswith(".run.json.")
    assert Path(temp).name.endswith(".tmp")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    target.write_bytes(b"good")

    def half(f: Any) -> None:
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, half)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_an_oserror_names_the_file_it_could_not_write(tmp_path: Path) -> None:
    target = tmp_path / "history.csv"

    def full(f: Any) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as raised:
        files.atomic_write(target, full)
    assert raised.value.filename == str(target) and raised.value.errno == 28

    def named(f: Any) -> None:
        raise OSError(13, "Permission denied", "/elsewhere")

    with pytest.raises(OSError) as kept:
        files.atomic_write(target, named)
    assert kept.value.filename == "/elsewhere", "a name the error already has is kept"
    assert list(tmp_path.iterdir()) == []


def test_text_and_json_are_utf8_and_indented(tmp_path: Path) -> None:
    files.atomic_write_text(tmp_path / "t.txt", "é ✓\n")
    assert (tmp_path / "t.txt").read_bytes() == "é ✓\n".encode()
    files.atomic_write_json(tmp_path / "d.json", {"b": 1, "a": Path("/x")})
    text = (tmp_path / "d.json").read_text()
    assert text == '{\n  "b": 1,\n  "a": "/x"\n}\n', "keys in order, indented, a newline at the end"
    assert json.loads(text) == {"b": 1, "a": "/x"}


# ---- one-line errors -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "shown"), [
    ("plain text, é and ✓", "plain text, é and ✓"),
    ("a\nb", "a\\nb"), ("\x1e", "\\x1e"), ("tab\there", "tab\\there"), ("", ""),
    ("x\r\n\x00y", "x\\r\\n\\x00y"),
])
def test_one_line_escapes_what_a_terminal_would_not_show_as_one_line(text: str, shown: str) -> None:
    assert one_line(text) == shown


def test_errors_carry_their_lines_hint_and_exit_code() -> None:
    error = ExpkitError("first", "second", hint="try this")
    assert str(error) == "first; second" and error.lines == ("first", "second")
    assert error.hint == "try this" and error.exit_code == 1
    usage = UsageError("bad flag")
    assert isinstance(usage, ExpkitError) and usage.exit_code == 2 and usage.hint is None


# ---- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://user:s3cr:et@db.host:5432/optuna", "postgresql+psycopg://user:***@db.host:5432/optuna"),
    ("postgresql://user@db/optuna", "postgresql://user@db/optuna"),
    ("sqlite:////tmp/results/sweeps/a/study.db", "sqlite:////tmp/results/sweeps/a/study.db"),
    ("mysql://u:p@h/d?x=1", "mysql://u:***@h/d?x=1"),
])
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


# ---- checkpoints -----------------------------------------------------------------------------


def test_a_checkpoint_round_trips_with_its_marker(tmp_path: Path) -> None:
    path = tmp_path / LAST
    save_checkpoint(path, {"epoch": 3, "model": {"w": torch.arange(4.0)}})
    state = load_checkpoint(path)
    assert state["expkit_checkpoint"] == 1 and state["epoch"] == 3
    assert torch.equal(state["model"]["w"], torch.arange(4.0))


def test_what_is_not_a_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExpkitError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"epoch": 1, "blob": torch.zeros(10_000)})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ExpkitError) as truncated:
        load_checkpoint(cut)
    message = str(truncated.value)
    assert message.startswith(f"{cut}: not a readable checkpoint (truncated or corrupt?): ")
    assert "\n" not in message and len(message) <= len(str(cut)) + 60 + 200
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ExpkitError, match="not a readable checkpoint"):
        load_checkpoint(empty)
    for name, state in (("foreign.pt", {"epoch": 1}), ("list.pt", [1, 2]),
                        ("future.pt", {"expkit_checkpoint": 2})):
        torch.save(state, tmp_path / name)
        with pytest.raises(ExpkitError, match="not an expkit checkpoint"):
            load_checkpoint(tmp_path / name)


class Payload:
    """A pickle that runs code when loaded: it creates the file it names."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"expkit_checkpoint": 1, "model": {}, "extra": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ExpkitError, match="not a readable checkpoint") as refused:
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists(), "loading a checkpoint must never run code from it"
    with pytest.raises(Exception) as torch_says:  # torch's own words: several lines
        torch.load(tmp_path / "evil.pt", weights_only=True)
    first_line = str(torch_says.value).strip().splitlines()[0]
    assert str(refused.value).endswith(f": {first_line[:200]}"), "the first line of torch's reason"


def test_rng_state_restores_every_generator() -> None:
    saved = rng_state()
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    set_rng_state(saved)
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    with_gauss = rng_state()
    after = np.random.randn()
    set_rng_state(with_gauss)
    assert np.random.randn() == after
    if not torch.cuda.is_available():  # a GPU run's checkpoint resumed on a CPU machine
        set_rng_state({**saved, "cuda": [torch.zeros(16, dtype=torch.uint8)]})
        assert random.random() == expected[0]


def test_weights_that_do_not_fit_are_one_clear_error() -> None:
    model = torch.nn.Linear(3, 2)
    load_weights(model, {"model": torch.nn.Linear(3, 2).state_dict()}, Path("ok.pt"))
    with pytest.raises(ExpkitError) as wrong:
        load_weights(model, {"model": torch.nn.Linear(4, 2).state_dict()}, Path("src.pt"))
    assert str(wrong.value).startswith("src.pt: its weights do not fit this model") and \
        "\n" not in str(wrong.value)
    with pytest.raises(ExpkitError, match=r"src\.pt: its weights do not fit"):
        load_weights(model, {}, Path("src.pt"))
    bigger = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(20))).state_dict()
    with pytest.raises(RuntimeError) as torch_says:
        model.load_state_dict(bigger)
    detail = " ".join(str(torch_says.value).split())
    assert len(detail) > 300
    with pytest.raises(ExpkitError) as long:
        load_weights(model, {"model": bigger}, Path("src.pt"))
    assert str(long.value).endswith(f": {detail[:300]}"), "torch's reason, cut at 300 characters"


def _trainer(epoch: int, best: int) -> Any:
    model = torch.nn.Linear(2, 1)
    return SimpleNamespace(epoch=epoch, best_epoch=best, model=model,
                           state_dict=lambda: {"epoch": epoch, "model": model.state_dict()})


def test_checkpointing_writes_last_every_epoch_and_best_on_improvement(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".last.pt.abc.tmp").write_bytes(b"left by a kill")
    (folder / "notes.txt").write_text("mine")
    saver = Checkpointing(folder, lambda: {"config": {"lr": 0.1}})
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"], "stale temp files go"
    saver.on_epoch_end(_trainer(1, 1), {"val_loss": 0.5})
    saver.on_epoch_end(_trainer(2, 1), {"val_loss": 0.7})
    last, best = load_checkpoint(folder / LAST), load_checkpoint(folder / BEST)
    assert last["epoch"] == 2 and last["config"] == {"lr": 0.1}
    assert best["epoch"] == 1 and best["metrics"] == {"val_loss": 0.5} and best["config"]
    saver.on_interrupt(_trainer(3, 1))
    assert load_checkpoint(folder / LAST)["epoch"] == 3
    assert load_checkpoint(folder / BEST)["epoch"] == 1
    saver.on_epoch_end(_trainer(int("300"), int("300")), {"val_loss": 0.1})  # equal, not identical
    assert load_checkpoint(folder / BEST)["epoch"] == 300, "a long run's best epoch is saved too"
    Checkpointing(tmp_path / "new", dict)
    assert (tmp_path / "new").is_dir()


# ---- the CLI's error path ---------------------------------------------------------------------


def test_report_prints_one_line_per_problem_and_returns_the_exit_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert report(ExpkitError("first\nproblem", "second", hint="do\tthis"), "run.py") == 1
    assert capsys.readouterr().err.splitlines() == [
        "run.py: error: first\\nproblem", "run.py: error: second", "run.py: do\\tthis"]
    assert report(UsageError("bad flag"), "expkit") == 2
    assert capsys.readouterr().err == "expkit: error: bad flag\n"
    assert report(KeyboardInterrupt(), "run.py") == 130
    assert capsys.readouterr().err == "run.py: interrupted\n"
    assert report(ValueError("x\ny"), "run.py") == 1
    assert capsys.readouterr().err == ("run.py: error: unexpected ValueError: x\\ny (a bug in "
                                       "expkit or the experiment; EXPKIT_DEBUG=1 shows the "
                                       "traceback)\n")


def test_under_torchrun_rank_0_reports_usage_errors_and_others_name_their_rank(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert report(UsageError("bad flag", hint="fix it"), "run.py", rank="1") == 2
    assert capsys.readouterr().err == "", "every rank parses the same flags: rank 0 alone says so"
    assert report(ExpkitError("disk full", hint="free space"), "run.py", rank="1") == 1
    assert capsys.readouterr().err.splitlines() == ["run.py: error: [rank 1] disk full",
                                                    "run.py: free space"]


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
    assert _in(ws, lambda: resume_run(run, ["--epochs=3"], REGISTRY, "run.py")) == 0
    assert load_checkpoint(run / "checkpoints" / LAST)["epoch"] == 3
    assert (run / "history.csv").read_text().startswith(rows) and _record(run)["resumes"][0][
        "argv"] == ["resume", str(run), "--epochs=3"]
    record = _record(run)
    record["status"] = "stopped"  # stopped at its last epoch's end: nothing left but the test
    (run / "run.json").write_text(json.dumps(record))
    assert _in(ws, lambda: resume_run(run, [], REGISTRY, "run.py")) == 0
    assert _record(run)["status"] == "finished" and len(_record(run)["resumes"]) == 2


def test_resume_refuses_unsafe_changes_and_checkpoints_of_other_runs(
        run_copy: tuple[Workspace, Path]) -> None:
    ws, run = run_copy
    with pytest.raises(UsageError) as changed:
        _in(ws, lambda: resume_run(run, ["--lr=0.5", "--epochs=3"], REGISTRY, "run.py"))
    assert changed.value.lines == ("cannot change on resume: --lr: was 0.001, now 0.5",)
    assert changed.value.hint and "--epochs" in changed.value.hint
    last = run / "checkpoints" / LAST
    state = load_checkpoint(last)
    save_checkpoint(last, {**state, "experiment_id": "fashion_cnn"})
    with pytest.raises(ExpkitError, match="written by experiment 'fashion_cnn', but this run is 'mnist'"):
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
    from expkit.record import environment, git_state

    code, _ = git_state(REPO / "src" / "lab")
    now = environment()
    same = json.loads(json.dumps(  # as read back from run.json: equal values, other objects
        {"code": code, "environment": {k: now[k] for k in ("python", "torch", "numpy", "cuda")}}))
    assert drift_warnings(same, REPO / "src" / "lab") == []
    other = {"code": {**code, "commit": "0" * 40},
             "environment": {**same["environment"], "torch": "1.0", "python": "2.7"}}
    assert drift_warnings(other, REPO / "src" / "lab") == [
        f"code: recorded commit {'0' * 40}, now {code.get('commit')}",
        "python: recorded 2.7, now " + now["python"], "torch: recorded 1.0, now " + now["torch"]]
    edited = {**same, "code": {**code, "diff_sha256": "edited"}}
    assert drift_warnings(edited, REPO / "src" / "lab") == [
        "code: uncommitted changes differ from the recorded code.diff"]


@pytest.mark.slow  # several runs or processes: `make test`, not test-fast
def test_reproduce_matches_a_run_and_names_every_value_that_differs(
        run_copy: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ws, run = run_copy
    assert _in(ws, lambda: reproduce_run(run, 0.0, REGISTRY, "run.py")) == 0
    out = capsys.readouterr().out
    assert "every metric matches" in out and "differs" not in out
    again = max(ws.run_dirs(), key=lambda p: p.stat().st_mtime)
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
    again = max(ws.run_dirs(), key=lambda p: p.stat().st_mtime)
    assert _record(again)["reproduction"]["differs"] == ["best.val_loss", "final.val_acc",
                                                         "test_loss"]
    assert _in(ws, lambda: reproduce_run(run, 0.3, REGISTRY, "run.py")) == 1  # 0.5 > 0.3
    again = max(ws.run_dirs(), key=lambda p: p.stat().st_mtime)
    assert _record(again)["reproduction"]["differs"] == ["best.val_loss"], "0.25 and 1e-3 are within"
    assert _in(ws, lambda: reproduce_run(run, edge, REGISTRY, "run.py")) == 0, "within, at the edge"
    (run / "metrics.json").unlink()
    with pytest.raises(ExpkitError, match=r"has no metrics\.json .* resume it with `run\.py resume"):
        _in(ws, lambda: reproduce_run(run, 0.0, REGISTRY, "run.py"))


def _record(run: Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_text())  # type: ignore[no-any-return]


# ---- the process group: one process, and two ranks over gloo ---------------------------------


def test_one_process_is_rank_0_of_1_and_every_collective_is_a_no_op(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert setup(False) is SINGLE and env_rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert setup(False) is SINGLE
    monkeypatch.setenv("RANK", "3")
    assert env_rank() == 3
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
