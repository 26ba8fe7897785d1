"""Bad input, table-driven: every case exits non-zero (2 for usage errors) with one clear line per
problem that says how to fix it, no traceback, no half-made run directory (none, or one marked
failed with the reason), and every file that existed before is byte-for-byte the same."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, Workspace, _clean_env, write_idx_set
from expkit.training.checkpoint import load_checkpoint

Setup = Callable[[Path], None]

# a run.py process per case (forked: tests/forked.py; test_cli.py runs usage errors through
# every entry point as a new program): the whole table is in `make test`, not in `make test-fast`
pytestmark = pytest.mark.slow


@dataclass
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    says: tuple[str, ...]  # substrings of stderr: what is wrong, and how to fix it
    setup: Setup | None = None
    run_dir: bool = False  # a run directory may be left, marked failed with the reason


MNIST = "--experiment_id=mnist"
QUICK = ("--epochs=1", "--max_train_samples=100", "--seed=0")


def write(name: str, content: bytes | str) -> Setup:
    def setup(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return setup


def make_dir(name: str) -> Setup:
    def setup(root: Path) -> None:
        target = root / name
        if target.is_file():
            target.unlink()
        target.mkdir(parents=True, exist_ok=True)
    return setup


def truncated(source: str, name: str, keep: int) -> Setup:
    def setup(root: Path) -> None:
        data = next(root.glob(source)).read_bytes()
        (root / name).write_bytes(data[:keep])
    return setup


def copy(source: str, name: str) -> Setup:
    def setup(root: Path) -> None:
        shutil.copyfile(next(root.glob(source)), root / name)
    return setup


def idx_dir(kind: str) -> Setup:
    """A --data_dir=bad folder with a broken MNIST training-images file."""
    def setup(root: Path) -> None:
        bad = root / "bad"
        shutil.copytree(root / "cache" / "mnist", bad)
        images = bad / "train-images-idx3-ubyte.gz"
        raw = gzip.decompress(images.read_bytes())
        if kind == "missing":
            images.unlink()
        elif kind == "truncated":
            images.write_bytes(gzip.compress(raw[: len(raw) // 3]))
        elif kind == "magic":
            images.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + raw[4:]))
        elif kind == "not-gzip":
            images.write_bytes(raw[:1000])
    return setup


def last_run_copy(root: Path) -> Path:
    """A copy of the finished run as results/mnist/copy (for resume cases)."""
    source = next((root / "results" / "mnist").iterdir())
    target = root / "results" / "mnist" / "copy"
    shutil.copytree(source, target)
    return target


def resume_with(change: Callable[[Path], None]) -> Setup:
    def setup(root: Path) -> None:
        change(last_run_copy(root))
    return setup


RUN_CKPT = "results/mnist/*/checkpoints/last.pt"
CNN_CKPT = "results/fashion_cnn/*/checkpoints/last.pt"

CASES = [
    # every argument type with a wrong value
    Case("int-not-a-number", (MNIST, "--epochs=three"), 2, ("--epochs", "'three'", "integer")),
    Case("int-below-bound", (MNIST, "--epochs=0"), 2, ("--epochs", "greater than or equal to 1")),
    Case("int-float", (MNIST, "--batch_size=6.5"), 2, ("--batch_size", "'6.5'")),
    Case("float-not-a-number", (MNIST, "--lr=fast"), 2, ("--lr", "'fast'", "number")),
    Case("float-bound", (MNIST, "--lr=-0.1"), 2, ("--lr", "greater than 0")),
    Case("float-upper-bound", (MNIST, "--dropout=1.5"), 2, ("--dropout", "less than 1")),
    Case("float-nan", (MNIST, "--lr=nan"), 2, ("--lr", "'nan'")),
    Case("bool", (MNIST, "--use_cuda=maybe"), 2, ("--use_cuda", "'maybe'", "true")),
    Case("list-items", (MNIST, "--hidden_sizes=[a,b]"), 2, ("--hidden_sizes",)),
    Case("list-bound", (MNIST, "--hidden_sizes=[64,0]"), 2, ("--hidden_sizes", "greater than or equal to 1")),
    Case("list-unclosed", (MNIST, "--hidden_sizes=[64"), 2, ("--hidden_sizes",)),
    Case("choice", (MNIST, "--activation=sigmoid"), 2, ("--activation", "relu", "gelu")),
    Case("choice-dataset", (MNIST, "--dataset=cifar"), 2, ("--dataset", "fashion_mnist")),
    Case("seed-negative", (MNIST, "--seed=-1"), 2, ("--seed",)),
    Case("huge-number", (MNIST, "--seed=" + "9" * 40), 2, ("--seed", "less than")),
    Case("fp16-on-cpu", (MNIST, "--precision=fp16", *QUICK), 2, ("--precision", "bf16")),
    Case("cuda-missing", (MNIST, "--use_cuda=true", *QUICK), 2, ("--use_cuda", "--use_cuda=false")),
    # flags
    Case("unknown-flag-near-miss", (MNIST, "--epoch=3"), 2, ("--epoch", "--epochs")),
    Case("unknown-flag", (MNIST, "--colour=blue"), 2, ("--colour",)),
    Case("duplicated-flag", (MNIST, "--epochs=1", "--epochs=2"), 2, ("--epochs", "given 2 times")),
    Case("flag-without-value", (MNIST, "--lr"), 2, ("--lr",)),
    Case("empty-int", (MNIST, "--epochs="), 2, ("--epochs", "''")),
    Case("empty-experiment-id", ("--experiment_id=",), 2, ("--experiment_id", "mnist")),
    Case("unknown-experiment", ("--experiment_id=mnsit",), 2, ("mnsit", "mnist")),
    Case("no-experiment", ("--epochs=2",), 2, ("--experiment_id is required", "mnist")),
    Case("experiment-flag-misspelled", ("--experment_id=mnist",), 2,
         ("unknown flag --experment_id (did you mean --experiment_id?)", "--experiment_id is required")),
    Case("list-status-choice", ("list", "--status=finshed"), 2,
         ("--status: got 'finshed' (did you mean 'finished'?)", "running, finished, failed")),
    Case("list-experiment-choice", ("list", "--experiment_id=mnsit"), 2,
         ("--experiment_id: got 'mnsit' (did you mean 'mnist'?)",)),
    Case("compare-format-choice", ("compare", MNIST, "--format=latx"), 2,
         ("--format: got 'latx' (did you mean 'latex'?)", "text, markdown, latex, csv")),
    Case("new-template-choice", ("new", "task", "--template=regresion"), 2,
         ("--template: got 'regresion'", "(did you mean 'regression'?)")),
    Case("traversal-experiment", ("--experiment_id=../../etc",), 2, ("../../etc", "mnist")),
    Case("unknown-command", ("trian",), 2, ("unknown command 'trian'", "run")),
    Case("bad-monitor", (MNIST, "--monitor=val_f1", *QUICK), 2,
         ("--monitor: got 'val_f1', which mnist does not compute",
          "choose one of: train_loss, train_acc, val_loss, val_acc")),
    Case("monitor-near-miss", (MNIST, "--monitor=val_accuracy", *QUICK), 2, ("did you mean 'val_acc'",)),
    Case("monitor-transposed", ("--experiment_id=diabetes", "--monitor=val_mea"), 2,
         ("did you mean 'val_mae'?",)),
    Case("choice-in-capitals", ("--experiment_id=diabetes", "--model=LINEAR"), 2,
         ("--model: got 'LINEAR'", "(did you mean 'linear'?)")),
    Case("compare-experiment-misspelled", ("compare", "--experiment_id=mnsit"), 2,
         ("--experiment_id=mnsit: no runs under", "(did you mean 'mnist'?)",
          "experiments with runs there: fashion_cnn, mnist")),
    Case("monitor-stateful-on-train", ("--experiment_id=breast_cancer", "--monitor=train_auroc"), 2,
         ("--monitor: got 'train_auroc', but auroc is computed on the evaluated splits only "
          "(val, test)", "monitor val_auroc")),
    Case("monitor-unknown-regression", ("--experiment_id=diabetes", "--monitor=val_nope"), 2,
         ("--monitor: got 'val_nope', which diabetes does not compute",
          "train_loss, train_mae, train_mse, train_r2, val_loss, val_mae, val_mse, val_r2")),
    Case("monitor-mode-contradicts-mae", ("--experiment_id=diabetes", "--monitor=val_mae",
                                          "--monitor_mode=max"), 2,
         ("--monitor_mode: got 'max', but val_mae is better lower (diabetes declares it 'min')",)),
    Case("monitor-mode-contradicts", (MNIST, "--monitor=val_loss", "--monitor_mode=max", *QUICK), 2,
         ("--monitor_mode: got 'max', but val_loss is better lower", "drop --monitor_mode")),
    # config.yaml
    Case("config-unknown-key-near-miss", (MNIST, *QUICK), 2, ("resultz_dir", "did you mean 'results_dir'"),
         write("config.yaml", "cache_dir: cache\nresultz_dir: results\n")),
    Case("config-unknown-key", (MNIST, *QUICK), 2, ("results_dirr",),
         write("config.yaml", "cache_dir: cache\nresults_dir: results\nresults_dirr: x\n")),
    Case("config-wrong-type", (MNIST, *QUICK), 2, ("config.yaml:3", "mode"),
         write("config.yaml", "cache_dir: cache\nresults_dir: results\nwandb: {mode: sometimes}\n")),
    Case("config-invalid-yaml", (MNIST, *QUICK), 2, ("config.yaml", "invalid YAML"),
         write("config.yaml", "cache_dir: [cache\nresults_dir: results\n")),
    Case("config-not-a-mapping", (MNIST, *QUICK), 2, ("config.yaml",),
         write("config.yaml", "- cache\n- results\n")),
    Case("config-is-a-directory", (MNIST, *QUICK), 2, ("config.yaml",), make_dir("config.yaml")),
    Case("config-not-utf8", (MNIST, *QUICK), 2, ("config.yaml",),
         write("config.yaml", b"cache_dir: \xff\xfe\x00\x01\n")),
    # --config FILE
    Case("config-file-missing", (MNIST, "--config=nope.yaml"), 2, ("nope.yaml",)),
    Case("config-file-invalid", (MNIST, "--config=run.yaml"), 2, ("run.yaml", "invalid YAML"),
         write("run.yaml", "epochs: [1\n")),
    Case("config-file-unknown-key", (MNIST, "--config=run.yaml"), 2,
         ("run.yaml: unknown key 'epochz' (did you mean 'epochs'?)",), write("run.yaml", "epochz: 3\n")),
    Case("config-file-flat-and-nested", (MNIST, "--config=run.yaml"), 2, ("'lr' is given twice",),
         write("run.yaml", "lr: 0.1\noptimizer: {lr: 0.2}\n")),
    Case("config-file-wrong-type", (MNIST, "--config=run.yaml"), 2, ("run.yaml", "epochs"),
         write("run.yaml", "epochs: many\n")),
    Case("config-file-directory", (MNIST, "--config=somedir"), 2, ("somedir",), make_dir("somedir")),
    Case("config-file-empty-flag", (MNIST, "--config="), 2, ("--config", "needs a file")),
    # data files
    Case("idx-missing", (MNIST, *QUICK, "--data_dir=bad", "--download=false"), 1,
         ("--data_dir: bad lacks train-images-idx3-ubyte.gz (gzipped or not); place the IDX",),
         idx_dir("missing")),
    Case("idx-truncated", (MNIST, *QUICK, "--data_dir=bad"), 1, ("train-images-idx3-ubyte.gz",),
         idx_dir("truncated")),
    Case("idx-wrong-magic", (MNIST, *QUICK, "--data_dir=bad"), 1,
         ("train-images-idx3-ubyte.gz", "magic"), idx_dir("magic")),
    Case("idx-not-gzip", (MNIST, *QUICK, "--data_dir=bad"), 1, ("train-images-idx3-ubyte.gz",),
         idx_dir("not-gzip")),
    # checkpoints
    Case("init-truncated", (MNIST, *QUICK, "--hidden_sizes=[16]", "--init_from=cut.pt"), 1,
         ("cut.pt", "truncated or corrupt"), truncated(RUN_CKPT, "cut.pt", 5000)),
    Case("init-zero-bytes", (MNIST, *QUICK, "--init_from=empty.pt"), 1, ("empty.pt",),
         write("empty.pt", b"")),
    Case("init-not-a-checkpoint", (MNIST, *QUICK, "--init_from=notes.txt"), 1, ("notes.txt",),
         write("notes.txt", "hello\n")),
    Case("init-other-experiment", (MNIST, *QUICK, "--init_from=cnn.pt"), 2,
         ("--init_from=cnn.pt: its weights do not fit this model", "--init_modules"),
         copy(CNN_CKPT, "cnn.pt")),
    Case("init-other-shape", (MNIST, *QUICK, "--hidden_sizes=[32]", "--init_from=mlp.pt"), 2,
         ("--init_from=mlp.pt: net.1.weight is (16, 784) there and (32, 784) in this model",),
         copy(RUN_CKPT, "mlp.pt")),
    Case("init-missing", (MNIST, *QUICK, "--init_from=gone.pt"), 2,
         ("--init_from=gone.pt: no such file or run directory",)),
    Case("init-module-missing", (MNIST, *QUICK, "--init_from=mlp.pt", "--init_modules=encoder"), 2,
         ("--init_modules: this model has no module 'encoder'", "its modules: net"),
         copy(RUN_CKPT, "mlp.pt")),
    Case("init-map-malformed", (MNIST, *QUICK, "--init_from=mlp.pt", "--init_map=net.1."), 2,
         ("--init_map: got 'net.1.'; expected OLD:NEW prefixes",), copy(RUN_CKPT, "mlp.pt")),
    Case("freeze-module-missing", (MNIST, *QUICK, "--freeze_modules=encoder"), 2,
         ("--freeze_modules: this model has no parameters under 'encoder'",)),
    Case("resume-not-a-run", ("resume", "cache"), 2, ("cache", "not a run directory")),
    Case("resume-missing-folder", ("resume", "nowhere"), 2, ("nowhere",)),
    Case("resume-truncated-last", ("resume", "results/mnist/copy"), 1, ("last.pt", "truncated"),
         resume_with(lambda run: (run / "checkpoints" / "last.pt").write_bytes(
             (run / "checkpoints" / "last.pt").read_bytes()[:3000]))),
    Case("resume-no-checkpoint", ("resume", "results/mnist/copy"), 1, ("no checkpoints/last.pt",),
         resume_with(lambda run: shutil.rmtree(run / "checkpoints"))),
    Case("resume-unsafe-change", ("resume", "results/mnist/copy", "--lr=0.5"), 2,
         ("cannot change on resume", "--lr"), resume_with(lambda run: None)),
    # the results folder
    Case("results-not-writable", (MNIST, *QUICK), 1, ("cannot create the results folder", "results_dir"),
         write("config.yaml", "cache_dir: cache\nresults_dir: afile/results\n")),
    # a loss that becomes NaN
    Case("nan-loss", (MNIST, "--optimizer=sgd", "--lr=1e12", "--epochs=3", "--max_train_samples=100",
                      "--seed=0", "--restore_best=false"), 1, ("diverged", "lower --lr"), run_dir=True),
]


#: caches that a run may update (new paths, new fonts); everything else must stay as it was
_CACHES = ("cache/.expkit-sha256.json", ".mpl/")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not str(p.relative_to(root)).startswith(_CACHES)}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with data, a finished MLP run and a finished CNN run, copied for each case."""
    root = tmp_path_factory.mktemp("template")
    write_idx_set(root / "cache" / "mnist", n_train=300, n_test=100)
    write_idx_set(root / "cache" / "fashion_mnist", n_train=300, n_test=100, seed=5)
    (root / "afile").write_text("a file where a folder is expected\n")
    ws = Workspace(root, _clean_env(root))
    for argv in ((MNIST, "--hidden_sizes=[16]", *QUICK),
                 ("--experiment_id=fashion_cnn", "--channels=[4,8]", *QUICK)):
        done = ws.run(*argv)
        assert done.returncode == 0, done.stderr
    return root


def test_the_table_is_what_the_readme_says() -> None:
    count = re.search(r"is a table of (\d+) such cases", (REPO / "docs" / "reliability.md").read_text())
    assert count and int(count.group(1)) == len(CASES), "docs/reliability.md: the number of cases"
    assert len({c.id for c in CASES}) == len(CASES), "case ids are unique"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, template: Path, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    shutil.copytree(template, root, symlinks=True)
    if case.setup:
        case.setup(root)
    before = _digest(root)
    runs_before = set((root / "results").glob("*/*"))
    result = Workspace(root, _clean_env(tmp_path)).fork(*case.argv, timeout=300)

    assert result.returncode == case.code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "a bug in expkit" not in result.stderr, "every bad input gets its own message"
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 4, result.stderr
    assert all(line.startswith("run.py: ") for line in lines), result.stderr
    for words in case.says:
        assert words in result.stderr, f"{words!r} not in: {result.stderr}"
    after = _digest(root)
    assert {k: after.get(k) for k in before} == before, "a file that existed changed"
    new_runs = set((root / "results").glob("*/*")) - runs_before
    if case.run_dir:
        assert len(new_runs) <= 1
        for run in new_runs:
            record = json.loads((run / "run.json").read_text())
            assert record["status"] == "failed" and record["error"], record
    else:
        assert not new_runs, f"a run directory was left: {new_runs}"


def test_flags_after_help_show_help_and_write_nothing(template: Path, tmp_path: Path) -> None:
    """`--help` wins over whatever follows it (as in argparse and git): help, exit 0, no files."""
    root = tmp_path / "ws"
    root.mkdir()
    result = Workspace(root, _clean_env(tmp_path)).cli(MNIST, "--help", "--epochs=abc", "--bogus")
    assert result.returncode == 0 and "--hidden_sizes" in result.stdout
    assert list(root.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config(template: Path, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    (root / "config.yaml").chmod(0)
    result = Workspace(root, _clean_env(tmp_path)).cli(MNIST, *QUICK)
    assert result.returncode == 2 and "config.yaml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_disk_full_mid_run_keeps_the_last_good_checkpoint(template: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE just above epoch 1's last.pt: epoch 2's (longer history) cannot be written."""
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    ws = Workspace(root, _clean_env(tmp_path))
    flags = [MNIST, "--hidden_sizes=[16]", "--max_train_samples=100", "--seed=0"]
    probe = ws.run(*flags, "--epochs=1")
    assert probe.returncode == 0, probe.stderr
    probe_run = max((root / "results" / "mnist").iterdir(), key=lambda p: p.stat().st_mtime)
    limit = (probe_run / "checkpoints" / "last.pt").stat().st_size + 64
    shutil.rmtree(probe_run)

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, str(REPO / "run.py"), *flags, "--epochs=4"], cwd=root,
                            env=ws.env, capture_output=True, text=True, preexec_fn=small_disk)
    assert result.returncode == 1
    assert "disk full" in result.stderr and "the last good checkpoint is" in result.stderr
    assert "Traceback" not in result.stderr
    run = max((root / "results" / "mnist").iterdir(), key=lambda p: p.stat().st_mtime)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "disk full" in record["error"]
    assert not list((run / "checkpoints").glob(".*.tmp")), "no half-written file is left"
    resumed = ws.run("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("error", ["ENOSPC", "EDQUOT"])
def test_a_full_disk_or_quota_keeps_the_last_good_checkpoint(template: Path, tmp_path: Path,
                                                             error: str) -> None:
    """Epoch 2's last.pt cannot be written (no space left, or the quota is used up): one
    clear line, the run marked failed, epoch 1's checkpoint intact and resumable."""
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    ws = Workspace(root, _clean_env(tmp_path))
    hooks = {"PYTHONPATH": str(Path(__file__).parent / "hooks"),
             "EXPKIT_TEST_AT": f"write:last.pt:2:{error}"}
    result = ws.fork(MNIST, "--hidden_sizes=[16]", "--max_train_samples=100", "--seed=0",
                     "--epochs=3", env=hooks)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("run.py: error: disk full: ") and os.strerror(getattr(errno, error)) in line
    assert "the last good checkpoint is" in line and "resume" in line
    run = ws.last_run()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list((run / "checkpoints").glob(".*.tmp")), "no half-written file is left"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "disk full" in record["error"]
    resumed = ws.run("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
