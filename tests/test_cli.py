"""The command line through its real entry points: run.py, `expkit`, `python -m expkit`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, TINY, Workspace
from expkit.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_seed_command_trains_into_a_complete_run_dir(data_workspace: Workspace) -> None:
    ws = data_workspace
    result = ws.cli("--experiment_id=mnist", "--use_cuda=false", '--hidden_sizes=[64]')
    assert result.returncode == 0, result.stderr
    assert (ws.root / "config.yaml").is_file()  # written on first run, and the run went on
    assert "wrote the default machine config" in result.stdout
    run = ws.last_run()
    for name in ("config.json", "history.csv", "history.png", "metrics.json", "log.txt"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hidden_sizes"] == [64] and config["use_cuda"] is False
    assert isinstance(config["seed"], int)  # generated and recorded
    assert (config["monitor"], config["monitor_mode"]) == ("val_acc", "max"), "mnist's default"
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time"} <= set(rows[0])
    assert (run / "history.png").read_bytes()[:8] == PNG_MAGIC
    metrics = ws.metrics(run)
    assert metrics["test"]["test_acc"] > 0.9  # the generated digits are learnable
    assert metrics["best"]["val_acc"] == max(float(r["val_acc"]) for r in rows)
    log = (run / "log.txt").read_text()
    assert "epoch 5/5" in log and str(run) in result.stdout
    assert "best val_acc" in result.stdout and "test_acc" in result.stdout


@pytest.mark.slow  # several runs or processes: `make test`, not test-fast
def test_monitor_mode_follows_the_declared_direction_of_the_metric(data_workspace: Workspace) -> None:
    ws = data_workspace
    result = ws.run("--experiment_id=mnist", "--monitor=val_loss", "--epochs=3", "--seed=0",
                    "--max_train_samples=200", "--hidden_sizes=[16]")
    assert result.returncode == 0, result.stderr
    run = ws.last_run()
    losses = [float(r["val_loss"]) for r in csv.DictReader((run / "history.csv").open())]
    lowest, highest = losses.index(min(losses)) + 1, losses.index(max(losses)) + 1
    assert lowest != highest, "the two modes must pick different epochs for this test to tell"
    metrics = ws.metrics(run)
    assert metrics["mode"] == "min" and metrics["best_epoch"] == lowest, \
        "--monitor=val_loss without --monitor_mode picks the epoch with the lowest val_loss"
    assert json.loads((run / "config.json").read_text())["monitor_mode"] == "min"
    assert f"best val_loss {min(losses):.4f} (epoch {lowest})" in result.stdout


def test_diabetes_monitored_by_val_mae_keeps_the_epoch_with_the_lowest(workspace: Workspace) -> None:
    ws = workspace
    result = ws.run("--experiment_id=diabetes", "--monitor=val_mae", "--epochs=12", "--seed=0")
    assert result.returncode == 0, result.stderr
    run = ws.last_run("diabetes")
    maes = [float(r["val_mae"]) for r in csv.DictReader((run / "history.csv").open())]
    assert maes.index(min(maes)) != maes.index(max(maes))
    metrics = ws.metrics(run)
    assert (metrics["mode"], metrics["best_epoch"]) == ("min", maes.index(min(maes)) + 1)


def test_diabetes_linear_baseline_is_least_squares_model(workspace: Workspace) -> None:
    """--model=linear: one linear layer from the 10 measurements (the baseline of the README's
    table), trained, saved and reloaded as such."""
    done = workspace.run("--experiment_id=diabetes", "--model=linear", "--lr=0.01", "--epochs=3",
                         "--seed=0")
    assert done.returncode == 0, done.stderr
    run = workspace.last_run("diabetes")
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert {k: tuple(v.shape) for k, v in state.items()} == {"net.weight": (1, 10), "net.bias": (1,)}
    assert json.loads((run / "config.json").read_text())["model"]["name"] == "linear"


@pytest.mark.parametrize(("argv", "expected"), [
    (["--epochs", "1", "--hidden_sizes", "[64,32]", "--use_cuda", "no", "--lr", "3e-4"],
     {"epochs": 1, ("model", "hidden_sizes"): [64, 32], "use_cuda": False,
      ("optimizer", "lr"): 3e-4}),
    (["--epochs=1", "--hidden_sizes=64,32", "--use_cuda=0", "--download", "--optimizer=sgd"],
     {("model", "hidden_sizes"): [64, 32], "use_cuda": False, ("dataset", "download"): True,
      ("optimizer", "name"): "sgd"}),
    # a bare "--" (what ends torchrun's own options) is a no-op
    (["--", "--epochs=2", "--monitor=val_loss"], {"epochs": 2, "monitor": "val_loss"}),
    (["--epochs=1", "--hidden_sizes=16", "--hidden_sizes=8", "--use_cuda=False",
      "--dataset", "fashion_mnist", "--download=yes", "--activation=gelu"],
     {("model", "hidden_sizes"): [16, 8], ("dataset", "name"): "fashion_mnist",
      ("model", "activation"): "gelu"}),
])
def test_flag_forms(workspace: Workspace, argv: list[str], expected: dict) -> None:
    result = workspace.fork("--experiment_id=mnist", "--max_train_samples=100", *argv,
                            "--print_config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    for key, value in expected.items():
        node = config
        for part in (key if isinstance(key, tuple) else (key,)):
            node = node[part]
        assert node == value, key


BAD_INPUT = [
    (["--experiment_id=mnist", "--epochs=0"], ["--epochs: got '0'", "greater than or equal to 1"]),
    (["--experiment_id=mnist", "--hiden_sizes=[64]"],
     ["unknown flag --hiden_sizes", "did you mean --hidden_sizes?"]),
    (["--experiment_id=mnist", "--lr=abc"], ["--lr: got 'abc'", "valid number"]),
    (["--experiment_id=mnist", "--hidden_sizes=[64"], ["--hidden_sizes", "JSON list"]),
    (["--experiment_id=mnist", "--hidden_sizes=a,b"], ["--hidden_sizes: got 'a,b' (item 1)"]),
    (["--experiment_id=mnist", "--use_cuda=maybe"], ["--use_cuda: got 'maybe'", "boolean"]),
    (["--experiment_id=mnist", "--dataset=fasion_mnist"], ["did you mean 'fashion_mnist'"]),
    (["--experiment_id=mnist", "--epochs"], ["--epochs: needs a value, as --epochs=VALUE"]),
    (["--experiment_id=mnist", "--epochs=1", "--epochs=2"], ["--epochs: given 2 times"]),
    (["--experiment_id=mnist", "stray"], ["unexpected argument 'stray'"]),
    (["--experiment_id=mnst"], ["unknown experiment", "did you mean 'mnist'"]),
    (["--epochs=1"], ["--experiment_id is required", "mnist"]),
    (["--experiment_id=mnist", "--scheduler=plateau", "--warmup_epochs=2"], ["warmup_epochs"]),
    (["--experiment_id=mnist", "--epochs=" + "9" * 26], ["less than or equal to 1000000"]),
    (["--experiment_id=mnist", "--lr=nan", "--dropout=inf"],
     ["--lr: got 'nan': Input should be a finite number", "--dropout: got 'inf'"]),
    (["--experiment_id=mnist", "--config", "\x1e"], ["\\x1e: no such file"]),
    (["--experiment_id=mnist", "--config", "a\nb"], ["a\\nb: no such file"]),
    (["--experiment_id=mnist", "--epochs=-1", "--lr=0", "--bogus=1"],  # all reported together
     ["--epochs: got '-1'", "--lr: got '0'", "unknown flag --bogus"]),
]


@pytest.mark.parametrize(("argv", "needles"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line_each_and_writes_nothing(
        workspace: Workspace, argv: list[str], needles: list[str]) -> None:
    # a process of its own, forked without importing torch again: exit status, stderr and the
    # files left are the program's (test_help_and_usage_errors_reach_a_pipe_whole runs the
    # programs themselves)
    result = workspace.fork(*argv)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert all(line.startswith("run.py: ") for line in result.stderr.splitlines())
    assert len(result.stderr.splitlines()) == len(result.stderr.split("\n")) - 1, \
        "user input is escaped: every message is exactly one line"
    assert "a bug in expkit" not in result.stderr, "bad input must get its own message"
    assert list(workspace.root.iterdir()) == []  # no config.yaml, no results, nothing


#: every built-in flag, before and after a `--flag value` of the experiment's: both must parse
BUILT_IN = [
    ("--print_config",), ("--print_config", "true"), ("--config", "run.yaml"),
    ("--experiment_id", "mnist"), ("--help",), ("--resume", "nowhere"),
]


@pytest.mark.parametrize("builtin", BUILT_IN, ids=" ".join)
@pytest.mark.parametrize("first", [True, False], ids=["first", "last"])
def test_built_in_flags_leave_other_flags_values_intact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        builtin: tuple[str, ...], first: bool) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXPKIT_CONFIG", str(tmp_path / "config.yaml"))
    (tmp_path / "run.yaml").write_text("epochs: 2\n")
    ours = ["--lr", "3e-5", "--hidden_sizes", "[8]"]
    rest = ["--experiment_id=mnist"] if builtin[0] != "--experiment_id" else []
    tail = [] if builtin[0] in ("--print_config", "--help", "--resume") else ["--print_config"]
    argv = [*builtin, *rest, *ours, *tail] if first else [*rest, *ours, *builtin, *tail]
    code = main(argv, registry="lab.registry", prog="run.py")
    out, err = capsys.readouterr()
    if builtin[0] == "--help":
        assert code == 0 and "--hidden_sizes" in out
    elif builtin[0] == "--resume":
        assert code == 2 and "nowhere: not a run directory" in err and "--lr" not in err, err
    else:
        assert code == 0, err
        config = yaml.safe_load(out)
        assert config["optimizer"]["lr"] == 3e-5 and config["model"]["hidden_sizes"] == [8]
        if builtin[0] == "--config":
            assert config["epochs"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_use_cuda_true_without_cuda_is_a_clear_error(data_workspace: Workspace) -> None:
    result = data_workspace.fork("--experiment_id=mnist", "--use_cuda=true", *TINY)
    assert result.returncode == 2
    assert "--use_cuda: got true, but" in result.stderr and "Traceback" not in result.stderr
    assert data_workspace.run_dirs() == []
    bare = data_workspace.fork("--experiment_id=mnist", "--use_cuda", *TINY)  # bare flag = true
    assert bare.returncode == 2 and "--use_cuda: got true" in bare.stderr


def test_help_lists_experiments_without_importing_torch(workspace: Workspace) -> None:
    code = ("import sys; from expkit.cli.main import main; rc = main(['--help'], registry='lab.registry',"
            " prog='run.py'); print('TORCH' if 'torch' in sys.modules else 'NO_TORCH'); "
            "raise SystemExit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    assert "NO_TORCH" in result.stdout
    assert "mnist" in result.stdout and "fashion_cnn" in result.stdout
    assert "MLP on MNIST handwritten digits" in result.stdout  # one-line description
    via_run_py = workspace.cli("--help")
    assert via_run_py.returncode == 0 and "fashion_cnn" in via_run_py.stdout


def test_experiment_help_groups_arguments_by_part(workspace: Workspace) -> None:
    result = workspace.cli("--experiment_id=mnist", "--help")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())  # argparse wraps long lines
    order = [out.index(title) for title in ("experiment: ", "model (MLPArgs)",
                                            "dataset (ImageDataArgs)", "optimizer (OptimizerArgs)",
                                            "scheduler (SchedulerArgs)")]
    assert order == sorted(order)
    assert "--hidden_sizes list[int]" in out and "(default: [128])" in out
    assert "--dataset {mnist,fashion_mnist,digits}" in out
    assert "widths of the hidden layers" in out  # the field's description
    assert list(workspace.root.iterdir()) == []


@pytest.mark.parametrize("experiment_id", ["mnist", "diabetes", "breast_cancer", "char_lm"])
def test_help_names_this_experiments_own_default_monitor(workspace: Workspace,
                                                          experiment_id: str) -> None:
    from lab.registry import EXPERIMENTS

    module, _, name = EXPERIMENTS[experiment_id].partition(":")
    default = getattr(__import__(module, fromlist=[name]), name).default_monitor
    result = workspace.run(f"--experiment_id={experiment_id}", "--help")
    out = " ".join(result.stdout.split())
    monitor = out[out.index("--monitor "):out.index("--monitor_mode")]
    assert f"(default: auto: {default})" in monitor, monitor
    assert "mnist: val_acc" not in out  # never another experiment's default


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["run.py", "expkit", "python -m expkit"])
def test_help_and_usage_errors_reach_a_pipe_whole(workspace: Workspace, entry: str) -> None:
    # these paths exit without the interpreter's teardown: buffered output must still arrive
    buffered = {k: v for k, v in workspace.env.items() if k != "PYTHONUNBUFFERED"}
    workspace.env = buffered
    full = workspace.cli("--experiment_id=mnist", "--help", entry=entry)
    assert full.returncode == 0, full.stderr
    assert full.stdout.startswith("usage: ") and "--progress [bool]" in full.stdout  # the last flag too
    assert full.stdout.endswith("\n") and full.stderr == ""
    bad = workspace.cli("--experiment_id=mnist", "--epochs=x", "--lr=-1", entry=entry)
    assert bad.returncode == 2
    lines = bad.stderr.splitlines()
    assert len(lines) == 2 and "--epochs: got 'x'" in lines[0] and "--lr: got '-1'" in lines[1]
    shown = workspace.cli("--experiment_id=mnist", "--print_config", entry=entry)
    assert shown.returncode == 0 and shown.stdout.rstrip().splitlines()[-1].startswith("  ")
    assert list(workspace.root.iterdir()) == []


def test_help_into_a_closed_pipe_is_quiet(workspace: Workspace) -> None:
    head = subprocess.run(f"{sys.executable} {REPO / 'run.py'} --experiment_id=mnist --help | head -1",
                          shell=True, cwd=workspace.root, capture_output=True, text=True,
                          env={k: v for k, v in workspace.env.items() if k != "PYTHONUNBUFFERED"})
    assert head.stdout.startswith("usage: ") and len(head.stdout.splitlines()) == 1
    assert head.stderr == ""


@pytest.mark.parametrize("unbuffered", [True, False])
@pytest.mark.parametrize(("entry", "args"), [("expkit", ["--help"]), ("run.py", ["--help"]),
                                             ("run.py", ["--experiment_id=mnist", "--help"])])
def test_a_reader_that_closed_the_pipe_is_not_a_bug(workspace: Workspace, entry: str,
                                                     args: list[str], unbuffered: bool) -> None:
    # `expkit --help | head -1`: head may exit before expkit writes; here the pipe's reading end
    # is closed before expkit starts, so that every write meets a broken pipe
    read_end, write_end = os.pipe()
    os.close(read_end)
    cmd = ([str(Path(sys.executable).parent / "expkit")] if entry == "expkit"
           else [sys.executable, str(REPO / "run.py")])
    env = {k: v for k, v in workspace.env.items() if unbuffered or k != "PYTHONUNBUFFERED"}
    try:
        done = subprocess.run([*cmd, *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              cwd=workspace.root, env={**env, **({"PYTHONUNBUFFERED": "1"}
                                                                 if unbuffered else {})},
                              timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.parametrize("entry", ["expkit", "python -m expkit"])
def test_expkit_command_and_module_run_experiments(data_workspace: Workspace, entry: str) -> None:
    listing = data_workspace.cli("--help", entry=entry)
    assert listing.returncode == 0 and "mnist" in listing.stdout  # found via the entry point
    result = data_workspace.cli("run", "--experiment_id=mnist", *TINY, entry=entry)
    assert result.returncode == 0, result.stderr
    assert (data_workspace.last_run() / "metrics.json").is_file()


def test_scheduler_and_learning_rate_per_epoch(data_workspace: Workspace) -> None:
    result = data_workspace.run("--experiment_id=mnist", "--epochs=3", "--scheduler=step",
                                "--step_size=1", "--gamma=0.5", "--max_train_samples=100")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((data_workspace.last_run() / "history.csv").open()))
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_warmup_then_cosine(data_workspace: Workspace) -> None:
    result = data_workspace.run("--experiment_id=mnist", "--epochs=4", "--scheduler=cosine",
                                "--warmup_epochs=1", "--max_train_samples=100")
    assert result.returncode == 0, result.stderr
    lrs = [float(r["lr"]) for r in csv.DictReader((data_workspace.last_run() / "history.csv").open())]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    assert lrs[1] > lrs[2] > lrs[3]


def test_missing_dataset_offline_names_files_and_folder(workspace: Workspace) -> None:
    result = workspace.run("--experiment_id=mnist", "--download=false", *TINY)
    assert result.returncode == 1
    assert "train-images-idx3-ubyte.gz" in result.stderr
    assert str(workspace.cache / "mnist") in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert workspace.run_dirs() == []


def test_unknown_monitor_lists_the_metrics_before_anything_is_created(
        data_workspace: Workspace) -> None:
    result = data_workspace.run("--experiment_id=mnist", "--monitor=val_accuracy", *TINY)
    assert result.returncode == 2
    assert "--monitor: got 'val_accuracy'" in result.stderr and "val_acc" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_workspace.results.exists(), "no run directory, not even the results folder"


def test_repo_readme_seed_command_is_the_one_tested() -> None:
    readme = (REPO / "README.md").read_text()
    assert 'python run.py --experiment_id=mnist --use_cuda=false --hidden_sizes="[64]"' in readme


def test_config_file_takes_flat_flag_names_and_nested_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A --config file may use the flag names (`lr: 3e-4`) or config.json's nesting, or both."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("lr: 3e-4\nhidden_sizes: [32]\nscheduler: cosine\n"
                                       "optimizer: {weight_decay: 0.01}\n")
    code = main(["--experiment_id=mnist", "--config", "run.yaml", "--print_config"],
                registry="lab.registry", prog="run.py")
    out = capsys.readouterr().out
    assert code == 0
    config = yaml.safe_load(out)
    assert config["optimizer"] == {**config["optimizer"], "lr": 3e-4, "weight_decay": 0.01}
    assert config["model"]["hidden_sizes"] == [32] and config["scheduler"]["name"] == "cosine"
    assert "lr: 0.0003  # run.yaml" in out and "hidden_sizes: [32]  # run.yaml" in out
