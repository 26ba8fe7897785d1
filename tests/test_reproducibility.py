"""The run record, determinism, reproduce, config files, schema, completion and list."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY, Workspace, _clean_env, write_idx_set
from expkit.rundir.results import wall_clock
from expkit.training.checkpoint import load_checkpoint
from lab.registry import EXPERIMENTS

CUSTOM_EXPERIMENT = '''
import torch
from lab.experiments.mnist import MnistExperiment


class Custom(MnistExperiment):
    """An experiment outside the lab package."""

    def build_model(self, data):
        if {fail!r}:
            raise RuntimeError("boom in build_model")
        model = super().build_model(data)
        if {scatter!r}:  # an op with no deterministic implementation, in every forward
            model.register_forward_pre_hook(put)
        return model


def put(*_):
    torch.zeros(2).put_(torch.tensor([0, 0]), torch.ones(2))
'''


def custom_cli(ws: Workspace, folder: Path, *argv: str, fail: bool = False, scatter: bool = False
               ) -> subprocess.CompletedProcess[str]:
    """Run a registry + experiment module that live in `folder` (maybe a git repo, maybe not)."""
    folder.mkdir(exist_ok=True)
    if not (folder / "myreg.py").exists():
        (folder / "myreg.py").write_text("EXPERIMENTS = {'custom': 'customexp:Custom'}\n")
        (folder / "customexp.py").write_text(CUSTOM_EXPERIMENT.format(fail=fail, scatter=scatter))
    code = f"from expkit.cli.main import main; raise SystemExit(main({list(argv)!r}, registry='myreg'))"
    return subprocess.run([sys.executable, "-c", code], cwd=ws.root, capture_output=True, text=True,
                          env={**ws.env, "PYTHONPATH": str(folder)}, timeout=300)


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def test_record_holds_code_environment_seed_sources_and_data(data_workspace: Workspace,
                                                            tmp_path: Path) -> None:
    ws = data_workspace
    repo = tmp_path / "repo"
    repo.mkdir()
    custom_cli(ws, repo, "--help")  # writes the two files
    git(repo, "init", "-q")
    git(repo, "add", "myreg.py", "customexp.py")
    git(repo, "commit", "-qm", "experiment")
    (repo / "customexp.py").write_text((repo / "customexp.py").read_text() + "# tuned\n")
    (repo / "notes.txt").write_text("untracked")
    result = custom_cli(ws, repo, "--experiment_id=custom", "--epochs=1",
                        "--max_train_samples=100", "--lr=0.01")
    assert result.returncode == 0, result.stderr
    run = ws.last_run("custom")
    record = json.loads((run / "run.json").read_text())
    assert record["argv"] == ["--experiment_id=custom", "--epochs=1", "--max_train_samples=100",
                              "--lr=0.01"]
    code = record["code"]
    assert re.fullmatch(r"[0-9a-f]{40}", code["commit"]) and code["dirty"] is True
    assert code["untracked"] == ["notes.txt"] and code["repository"] == str(repo)
    assert "+# tuned" in (run / "code.diff").read_text()
    assert record["sources"]["optimizer.lr"] == "cli" and record["sources"]["batch_size"] == "default"
    assert record["seed"]["generated"] is True
    assert record["seed"]["value"] == json.loads((run / "config.json").read_text())["seed"]
    env = record["environment"]
    assert env["torch"].startswith("2.") and env["cpu_count"] >= 1 and env["host"]
    assert "torch==" in (run / "requirements.txt").read_text()
    files = record["data"]["files"]
    assert len(files) == 4 and all(
        hashlib.sha256(Path(p).read_bytes()).hexdigest() == digest for p, digest in files.items())
    assert record["status"] == "finished" and record["ended"] >= record["started"]
    assert record["machine"]["results_dir"] == str(ws.results)


def test_record_outside_git_and_a_failed_run(data_workspace: Workspace, tmp_path: Path) -> None:
    ws = data_workspace
    result = custom_cli(ws, tmp_path / "plain", "--experiment_id=custom", *TINY, fail=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if "run failed: RuntimeError: boom" in line]
    record = json.loads((ws.last_run("custom") / "run.json").read_text())
    assert record["code"]["repository"] is None and "not in a git repository" in record["code"]["note"]
    assert record["status"] == "failed" and "boom in build_model" in record["traceback"]


@pytest.mark.slow  # several whole runs: `make test`, not test-fast
def test_deterministic_runs_give_identical_weights(data_workspace: Workspace) -> None:
    ws = data_workspace
    args = ("--experiment_id=mnist", "--epochs=2", "--seed=11", "--deterministic=true",
            "--dropout=0.2", "--max_train_samples=300")
    assert ws.run(*args).returncode == 0 and ws.cli(*args).returncode == 0
    first, second = ws.run_dirs()

    def digest(run: Path) -> str:
        weights = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
        return hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights))).hexdigest()

    assert digest(first) == digest(second)
    def results(run: Path) -> list[dict[str, str]]:  # every column but the timings
        with (run / "history.csv").open() as f:
            return [{k: v for k, v in row.items() if not wall_clock(k)} for row in csv.DictReader(f)]
    assert results(first) == results(second)


@pytest.mark.slow  # several whole runs: `make test`, not test-fast
def test_deterministic_refuses_an_op_that_has_no_deterministic_implementation(
        data_workspace: Workspace, tmp_path: Path) -> None:
    """On CPU training is deterministic with or without the flag (the test above passes either
    way); what --deterministic=true adds is torch's check: an op that would vary between runs
    (on a GPU) fails the run, naming the op, instead of varying silently."""
    ws = data_workspace
    free = custom_cli(ws, tmp_path, "--experiment_id=custom", *TINY, scatter=True)
    assert free.returncode == 0, free.stderr
    strict = custom_cli(ws, tmp_path, "--experiment_id=custom", *TINY, "--deterministic=true")
    assert strict.returncode == 1, "--deterministic=true must turn on torch's determinism checks"
    assert "put_ does not have a deterministic implementation" in strict.stderr, strict.stderr


@pytest.mark.slow  # several whole runs: `make test`, not test-fast
def test_reproduce_matches_and_reports_differences(data_workspace: Workspace) -> None:
    ws = data_workspace
    assert ws.run("--experiment_id=mnist", "--epochs=2", "--max_train_samples=200").returncode == 0
    original = ws.last_run()
    same = ws.cli("reproduce", str(original), entry="expkit")
    assert same.returncode == 0, same.stderr
    assert "every metric matches" in same.stdout and re.search(r"test_acc\s+\S+\s+\S+\s+match", same.stdout)
    copy = ws.last_run()
    assert copy != original
    assert json.loads((copy / "run.json").read_text())["reproduces"] == str(original)
    recorded = (original / "metrics.json").read_text()
    record = json.loads((original / "run.json").read_text())
    record["environment"]["torch"] = "0.1.0"  # recorded with another torch: a drift warning
    (original / "run.json").write_text(json.dumps(record))
    for part, name, row in [("test", "test_loss", "test_loss"), ("final", "val_acc", "final.val_acc"),
                            ("best", "train_loss", "best.train_loss"), (None, "best_epoch", "best_epoch")]:
        metrics = json.loads(recorded)  # one recorded value changed at a time
        if part is None:
            metrics[name] += 1
        else:
            metrics[part][name] += 0.01
        (original / "metrics.json").write_text(json.dumps(metrics))
        differs = ws.run("reproduce", str(original))
        assert differs.returncode == 1, f"reproduce missed a changed {row}"
        verdicts = dict(re.findall(r"^(\S+)\s+\S+\s+\S+\s+(match|differs)$", differs.stdout, re.M))
        assert [k for k, v in verdicts.items() if v == "differs"] == [row], differs.stdout
        assert {"test_acc", "final.train_loss", "final.val_loss", "best.val_acc"} <= set(verdicts)
        assert json.loads((ws.last_run() / "run.json").read_text())["reproduction"]["differs"] == [row]
        assert "warning: torch: recorded 0.1.0, now " in differs.stdout
    within = ws.run("reproduce", str(original), "--tolerance=1.5")
    assert within.returncode == 0, within.stdout


def test_config_file_with_flag_overrides_and_sources(data_workspace: Workspace) -> None:
    ws = data_workspace
    (ws.root / "exp.yaml").write_text("experiment_id: mnist\nepochs: 3\noptimizer:\n  lr: 3e-4\n"
                                      "model:\n  hidden_sizes: [16]\ndataset:\n  max_train_samples: 100\n")
    printed = ws.run("--config", "exp.yaml", "--epochs=1", "--print_config")
    assert printed.returncode == 0 and not ws.results.exists()
    assert "epochs: 1  # cli" in printed.stdout and "lr: 0.0003  # exp.yaml" in printed.stdout
    assert "batch_size: 64  # default" in printed.stdout
    assert yaml.safe_load(printed.stdout)["model"]["hidden_sizes"] == [16]
    result = ws.run("--config", "exp.yaml", "--epochs=1")
    assert result.returncode == 0, result.stderr
    run = ws.last_run()
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 1 and config["optimizer"]["lr"] == 3e-4
    again = ws.run("--config", str(run / "config.json"))  # a run's own config re-runs as is
    assert again.returncode == 0, again.stderr
    assert json.loads((ws.last_run() / "config.json").read_text()) == config


@pytest.mark.parametrize(("text", "needles"), [
    ("experiment_id: mnist\nmodel:\n  hidden_sizes: [a]\n",
     ["bad.yaml: key 'model.hidden_sizes.0': got 'a'"]),
    ("experiment_id: mnist\noptimizer:\n  lrr: 0.1\n",
     ["bad.yaml: unknown key 'optimizer.lrr' (did you mean 'lr'?)"]),
    ("experiment_id: mnist\nepochs: [1\n", ["bad.yaml:", "invalid YAML"]),
    ("- 1\n", ["bad.yaml: expected a mapping"]),
])
def test_bad_config_file_names_file_and_key(workspace: Workspace, text: str,
                                            needles: list[str]) -> None:
    (workspace.root / "bad.yaml").write_text(text)
    result = workspace.run("--experiment_id=mnist", "--config", "bad.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert sorted(p.name for p in workspace.root.iterdir()) == ["bad.yaml"]


def test_schema_checks_yaml_configs(workspace: Workspace) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    result = workspace.cli("schema", "--experiment_id=mnist", entry="expkit")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    good = yaml.safe_load("experiment_id: mnist\nmodel:\n  hidden_sizes: [64, 32]\n")
    jsonschema.validate(good, schema)
    for bad in ("experiment_id: mnist\ndataset:\n  name: cifar\n",
                "experiment_id: mnist\nmodel:\n  hidden_sizez: [64]\n",
                "experiment_id: mnist\nepochs: 0\n"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(yaml.safe_load(bad), schema)


def test_bash_completion_completes_without_python(workspace: Workspace, tmp_path: Path) -> None:
    result = workspace.cli("completion", "bash", entry="expkit")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "expkit.bash"
    script.write_text(result.stdout)
    assert "python" not in result.stdout  # TAB runs no Python, so never imports torch

    def complete(line: str) -> list[str]:
        words = line.replace("=", " = ").split() + ([""] if line.endswith((" ", "=")) else [])
        bash = (f"source {script}; COMP_LINE={line!r}; COMP_WORDS=({' '.join(map(repr, words))}); "
                f"COMP_CWORD={len(words) - 1}; _expkit_complete; echo \"${{COMPREPLY[@]}}\"")
        out = subprocess.run(["bash", "-c", bash], capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert complete("expkit re") == ["resume", "reproduce", "repeat", "report"]
    assert complete("expkit run --experiment_id=") == sorted(EXPERIMENTS), "the registry's ids"
    assert sorted(complete("expkit run --experiment_id=mnist --data")) == ["--data_dir", "--dataset"]
    assert complete("expkit run --experiment_id=mnist --dataset=") == ["mnist", "fashion_mnist", "digits"]
    assert complete("expkit run --experiment_id=mnist --use_cuda ") == ["true", "false"]
    assert "--channels" in complete("expkit run --experiment_id=fashion_cnn --ch")


def test_list_filters_runs(data_workspace: Workspace) -> None:
    ws = data_workspace
    assert ws.run("--experiment_id=mnist", *TINY).returncode == 0
    assert ws.run("--experiment_id=fashion_cnn", *TINY).returncode == 0
    everything = ws.cli("list", entry="expkit")
    assert everything.returncode == 0
    lines = everything.stdout.strip().splitlines()
    assert lines[0].split() == ["experiment", "dataset", "run", "started", "status", "epochs", "best"]
    assert len(lines) == 3 and all("finished" in line and "val_acc" in line for line in lines[1:])
    assert {tuple(line.split()[:2]) for line in lines[1:]} == {("mnist", "mnist"),
                                                                ("fashion_cnn", "fashion_mnist")}
    only = ws.cli("list", "--experiment_id=fashion_cnn", entry="expkit").stdout.strip().splitlines()
    assert len(only) == 2 and only[1].startswith("fashion_cnn")
    none = ws.cli("list", "--status=failed", entry="expkit")
    assert none.stdout.strip() == "no runs found"


@pytest.mark.slow
def test_a_fresh_clone_stays_clean_after_runs_and_a_compare(tmp_path: Path) -> None:
    """The tool's own files (matplotlib's cache as the Makefile places it, compare.png, the
    config, data and results) are ignored or under results/: a later run is not `dirty`."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    write_idx_set(clone / "cache" / "mnist", n_train=200, n_test=50)
    env = {**_clean_env(tmp_path), "HOME": str(tmp_path / "home"),
           "MPLCONFIGDIR": str(clone / ".cache" / "matplotlib")}  # as `make` sets it

    def run_py(*args: str) -> None:
        done = subprocess.run([sys.executable, "run.py", *args], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

    run_py("--experiment_id=mnist", *TINY)
    run_py("compare", "--experiment_id=mnist", "--last", "1")
    run_py("--experiment_id=mnist", *TINY)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                            text=True, check=True).stdout
    assert status == "", f"a run left files git sees:\n{status}"
    second = sorted((clone / "results" / "mnist").iterdir())[-1]
    code = json.loads((second / "run.json").read_text())["code"]
    assert code["dirty"] is False and not code["untracked"], code
