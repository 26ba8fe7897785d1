"""The guarantee code on its own, in this process and fast: atomic writes, checkpoints, RNG
state, one-line errors and the CLI's error path, password redaction. `make mutants` runs these
against mutants of those modules (tests/test_guarantees_runs.py: resume, reproduce, the
process group); the end-to-end tests check the same guarantees through the CLI."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from expkit.config.machine import redact
from expkit.errors import ExpkitError, UsageError, one_line, report
from expkit.training.checkpoint import (
    BEST,
    LAST,
    Checkpointing,
    check_state,
    load_checkpoint,
    load_weights,
    reason,
    save_checkpoint,
)
from expkit.training.rng import rng_state, set_rng_state
from expkit.utils import files

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
    ("https://me:tok@mlflow.lab:5000/", "https://me:***@mlflow.lab:5000/"),
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


def test_a_reason_is_one_short_line() -> None:
    assert reason(ValueError("first\nsecond")) == "first"
    assert reason(ValueError("x" * 300)) == "x" * 200
    assert reason(ValueError("  ")) == "ValueError" and reason(KeyError()) == "KeyError"


def test_dataset_state_that_would_not_load_back_is_refused_before_the_run() -> None:
    check_state({"y_mean": 1.5, "classes": ["a", "b"], "scale": torch.ones(3), "n": {"k": 2}})
    with pytest.raises(ExpkitError, match=r"the dataset's state cannot be saved in a checkpoint: "
                                          r"Weights only load failed") as refused:
        check_state({"scale": np.ones(3)})
    assert refused.value.hint and "numbers, strings, tensors" in refused.value.hint
    with pytest.raises(ExpkitError, match=r"cannot be saved in a checkpoint: .*lambda"):
        check_state({"f": lambda: 0})  # not even picklable


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
    assert ("cuda" in saved) == torch.cuda.is_available(), "a CPU run saves no CUDA state"
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
                           state_dict=lambda: {"epoch": epoch, "model": model.state_dict()},
                           weights=lambda: {"model": model.state_dict()})


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
