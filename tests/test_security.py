"""Secrets never leave config.yaml/the environment; loads are safe; names cannot escape folders."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

from conftest import REPO, Workspace
from expkit.rundir.dirs import create_run_dir

FILE_KEY = "FILEKEY-" + "4" * 32  # planted in config.yaml
ENV_KEY = "ENVKEY-" + "9" * 32    # planted in the environment (wins over the file)
DB_PASSWORD = "DBPASS-" + "3" * 20


@pytest.mark.slow
def test_planted_keys_appear_nowhere(data_workspace: Workspace) -> None:
    pytest.importorskip("wandb")
    ws = data_workspace
    (ws.root / "config.yaml").write_text(
        "cache_dir: cache\nresults_dir: results\n"
        f"wandb:\n  mode: offline\n  api_key: {FILE_KEY}\n")
    outputs = []

    def cli(*args: str, env: dict[str, str] | None = None, code: int = 0,
            in_process: bool = False, forked: bool = False) -> None:
        result = (ws.run if in_process else ws.fork if forked else ws.cli)(*args, env=env)
        assert result.returncode == code, result.stderr
        outputs.append(result.stdout + result.stderr)

    train = ("--experiment_id=mnist", "--use_wandb=true", "--epochs=2", "--seed=0",
             "--max_train_samples=200")
    cli(*train, forked=True)                       # the key from config.yaml only
    run = ws.last_run()
    cli(*train, "--print_config", in_process=True)  # the commands without wandb: in this process
    cli("resume", str(run), "--epochs=3", env={"WANDB_API_KEY": ENV_KEY}, forked=True)
    cli("reproduce", str(run), "--tolerance=1", env={"WANDB_API_KEY": ENV_KEY})
    cli("report", str(run), in_process=True)
    cli("report", "--index", in_process=True)
    cli("compare", str(run), "--out", str(ws.results / "cmp.png"), in_process=True)
    cli("--experiment_id=mnist", "--init_from=nowhere.pt", env={"WANDB_API_KEY": ENV_KEY}, code=2,
        in_process=True)
    cli("sweep", "--experiment_id=mnist", "--space", "lr=uniform:0.001:0.01",
        "--storage", f"postgresql+psycopg://user:{DB_PASSWORD}@127.0.0.1:9/db", code=1,
        in_process=True)

    files = [p for p in ws.root.rglob("*") if p.is_file() and p.name != "config.yaml"]
    assert any(p.suffix == ".wandb" for p in files), "wandb wrote its offline run"
    assert any(p.name == "report.html" for p in files) and any(p.name == "index.html" for p in files)
    for secret in (FILE_KEY, ENV_KEY, DB_PASSWORD):
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert leaked == [], f"{secret[:7]} leaked into {leaked}"
        assert not any(secret in out for out in outputs), f"{secret[:7]} was printed"
    assert "api_key_set" in (run / "run.json").read_text()  # what is recorded instead


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str:
    return ast.unparse(call.func)


SOURCES = sorted((REPO / "src").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(REPO / "src")) for p in SOURCES])
def test_loads_are_safe_and_nothing_runs_a_shell(path: Path) -> None:
    for call in _calls(ast.parse(path.read_text())):
        name = _name(call)
        keywords = {k.arg: k.value for k in call.keywords}
        if name.endswith("torch.load"):
            weights_only = keywords.get("weights_only")
            assert isinstance(weights_only, ast.Constant) and weights_only.value is True, \
                f"{path}:{call.lineno}: torch.load without weights_only=True"
        if name == "yaml.load":  # only with a SafeLoader (subclass), i.e. safe_load with extras
            loader = keywords.get("Loader")
            assert loader is not None, f"{path}:{call.lineno}: yaml.load without a Loader"
            module = importlib.import_module(".".join(path.relative_to(REPO / "src").with_suffix("").parts))
            assert issubclass(getattr(module, ast.unparse(loader)), yaml.SafeLoader), \
                f"{path}:{call.lineno}: yaml.load with an unsafe Loader"
        assert not name.endswith(("yaml.unsafe_load", "yaml.full_load", "pickle.load", "pickle.loads")), \
            f"{path}:{call.lineno}: {name}"
        assert name not in ("os.system", "os.popen", "eval", "exec"), f"{path}:{call.lineno}: {name}"
        shell = keywords.get("shell")
        assert not (isinstance(shell, ast.Constant) and shell.value), \
            f"{path}:{call.lineno}: a subprocess with shell=True"


@pytest.mark.parametrize("hostile", ["../../etc", "/abs/path", "a/../../b", "..", ".hidden", "x\x00y",
                                     "con:nul", "name with spaces"])
def test_run_directories_stay_inside_results(tmp_path: Path, hostile: str) -> None:
    results = tmp_path / "results"
    run_dir = create_run_dir(results, hostile)
    assert run_dir.resolve().is_relative_to(results.resolve())
    assert run_dir.parent.parent == results
    assert run_dir.parent.name not in ("", ".", "..")
