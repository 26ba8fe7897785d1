"""--use_mlflow against a real `mlflow server` on 127.0.0.1 (SQLite store, and once PostgreSQL),
read back with MlflowClient: params, metrics per evaluation at their step, tags, artifacts;
a SIGKILL and resume, a server that is away at the start or goes away mid-run, `expkit sync`,
and the planted secrets of an MLflow run. (That a run without --use_mlflow never imports
mlflow is checked in test_plotting's probe of a plain run.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import Workspace, free_port
from expkit.rundir.results import read_history
from expkit.rundir.values import as_typed, flatten
from expkit.training.checkpoint import load_checkpoint
from mlflow_server import Server, shared_server, start_mlflow

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

HOOKS = str(Path(__file__).parent / "hooks")
SMALL = ("--experiment_id=mnist", "--use_mlflow=true", "--seed=0", "--max_train_samples=200")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The suite's MLflow server (SQLite store): the one the test session started in the
    background at its start (conftest), shared by the xdist workers; else one of its own."""
    shared = shared_server()
    if shared is not None:
        yield shared
        return
    folder = tmp_path_factory.mktemp("mlflow")
    started = start_mlflow(folder, f"sqlite:///{folder / 'store.db'}")
    yield started
    started.stop()


def steps(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def mlflow_run_id(run_dir: Path) -> str:
    return str(json.loads((run_dir / "run.json").read_text())["mlflow"]["run_id"])


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def assert_history_on_server(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    """Every metric of history.csv is on the server once per evaluation, at its step, same value."""
    history = read_history(run_dir)
    x = "step" if "step" in history[0] else "epoch"
    keys = [k for k in history[0] if k != x]
    assert keys and "val_loss" in keys
    for key in keys:
        assert steps(client, run_id, key) == [(int(row[x]), row[key]) for row in history], key


@pytest.mark.slow
def test_killed_run_is_synced_as_killed_and_resume_completes_each_epoch_once(
        data_workspace: Workspace, server: Server, tmp_path: Path) -> None:
    ws = data_workspace
    env = {"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_EXPERIMENT_NAME": "killed"}
    # killed inside epoch 2's history.csv write: last.pt holds epoch 2, the server only epoch 1
    killed = ws.fork(*SMALL, "--epochs=4", env={**env, "PYTHONPATH": HOOKS,
                                                 "EXPKIT_TEST_AT": "write:history.csv:2:KILL"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = ws.last_run()
    run_id = mlflow_run_id(run_dir)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trackers"]["mlflow"] == run_id
    client = MlflowClient(server.uri)
    assert [s for s, _ in steps(client, run_id, "val_loss")] == [1]
    assert client.get_run(run_id).info.status == "RUNNING"  # a killed process closes nothing

    synced = ws.run("sync", str(run_dir), env=env)
    assert synced.returncode == 0, synced.stderr
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["expkit.status"] == "killed"

    resumed = ws.fork("resume", str(run_dir), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_history_on_server(client, run_id, run_dir)
    assert [s for s, _ in steps(client, run_id, "val_loss")] == [1, 2, 3, 4]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["expkit.status"] == "finished"
    assert len(client.search_runs([run.info.experiment_id])) == 1, "one MLflow run, continued"
    config = json.loads((run_dir / "config.json").read_text())
    assert run.data.params == {k: as_typed(v) for k, v in flatten(config).items()}
    assert run.data.params["optimizer.lr"] == as_typed(config["optimizer"]["lr"])
    record = json.loads((run_dir / "run.json").read_text())
    assert run.data.tags["expkit.run_dir"] == str(run_dir)
    assert run.data.tags["expkit.experiment_id"] == "mnist"
    assert run.data.tags.get("mlflow.source.git.commit") == record["code"].get("commit")
    summary = ws.metrics(run_dir)
    for key, value in summary["test"].items():
        assert run.data.metrics[key] == value
    assert run.data.metrics["best/val_loss"] == summary["best"]["val_loss"]
    assert run.data.metrics["final/train_loss"] == summary["final"]["train_loss"]
    assert run.data.tags["expkit.stop_reason"] == summary["stop_reason"]
    assert {"history.png", "history.csv", "metrics.json"} <= artifact_paths(client, run_id)
    assert not any(p.startswith("checkpoints") for p in artifact_paths(client, run_id))
    copy = Path(client.download_artifacts(run_id, "history.csv", str(tmp_path)))
    assert copy.read_bytes() == (run_dir / "history.csv").read_bytes()


@pytest.mark.slow
def test_postgresql_store_step_based_run_with_checkpoints(data_workspace: Workspace, postgres: str,
                                                         tmp_path: Path) -> None:
    started = start_mlflow(tmp_path / "mlflow-pg", postgres)
    try:
        ws = data_workspace
        result = ws.run(*SMALL, "--max_steps=9", "--eval_every=4", "--mlflow_log_checkpoints=true",
                        env={"MLFLOW_TRACKING_URI": started.uri})
        assert result.returncode == 0, result.stderr
        run_dir = ws.last_run()
        client = MlflowClient(started.uri)
        run_id = mlflow_run_id(run_dir)
        assert [s for s, _ in steps(client, run_id, "val_loss")] == [4, 8, 9]
        assert_history_on_server(client, run_id, run_dir)  # "epoch" too: passes so far, a fraction
        assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "mnist"
        assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= artifact_paths(client, run_id)
        out = Path(client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp_path)))
        assert out.read_bytes() == (run_dir / "checkpoints" / "last.pt").read_bytes()
    finally:
        started.stop()


def test_unreachable_server_warns_once_and_sync_sends_the_run_later(
        data_workspace: Workspace, server: Server) -> None:
    ws = data_workspace
    away = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "MLFLOW_EXPERIMENT_NAME": "later"}
    result = ws.run(*SMALL, "--epochs=2", env=away)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert out.count("warning: MLflow") == 1 and "Traceback" not in out
    run_dir = ws.last_run()
    assert f"sync {run_dir}" in out
    assert (run_dir / "metrics.json").is_file() and len(read_history(run_dir)) == 2

    here = {**away, "MLFLOW_TRACKING_URI": server.uri}
    # a second sync sends nothing twice; the folder as typed (relative) is recorded absolute
    for typed in (run_dir.relative_to(ws.root), run_dir):
        synced = ws.run("sync", str(typed), env=here)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        client = MlflowClient(server.uri)
        run_id = mlflow_run_id(run_dir)
        assert_history_on_server(client, run_id, run_dir)
        assert client.get_run(run_id).info.status == "FINISHED"
        tags = client.get_run(run_id).data.tags
        assert tags["expkit.run_dir"] == str(run_dir.absolute())
        assert json.loads(tags["expkit.directions"]) == ws.metrics(run_dir)["directions"]
    assert {"history.png", "metrics.json"} <= artifact_paths(client, run_id)
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1


class GoesAway(ThreadingHTTPServer):
    """An HTTP proxy to the MLflow server that stops answering (drops every connection) once it
    has passed `batches` requests carrying metrics: the server "goes away" at a moment fixed by
    the run's own requests, not by a clock."""

    def __init__(self, target: str, batches: int) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.target, self.batches, self.dark = target, batches, False


class _Forward(BaseHTTPRequestHandler):
    server: GoesAway

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        if self.server.dark:
            self.close_connection = True
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        request = urllib.request.Request(self.server.target + self.path, body, headers,
                                         method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, data, kind = answer.status, answer.read(), answer.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            status, data, kind = e.code, e.read(), e.headers.get("Content-Type")
        self.send_response(status)
        self.send_header("Content-Type", kind or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.path.endswith("/runs/log-batch") and body and json.loads(body).get("metrics"):
            self.server.batches -= 1
            self.server.dark = self.server.batches <= 0

    do_GET = do_POST = _forward


def test_server_that_goes_away_mid_run_costs_one_warning(data_workspace: Workspace,
                                                          server: Server) -> None:
    ws = data_workspace
    proxy = GoesAway(server.uri, batches=2)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{proxy.server_address[1]}",
               "MLFLOW_EXPERIMENT_NAME": "goes-away"}
        result = ws.run(*SMALL, "--epochs=4", env=env)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert out.count("warning: MLflow") == 1 and "could not log metrics" in out, out
    run_dir = ws.last_run()
    assert ws.metrics(run_dir)["epochs_run"] == 4 and len(read_history(run_dir)) == 4
    client = MlflowClient(server.uri)
    run_id = mlflow_run_id(run_dir)
    assert [s for s, _ in steps(client, run_id, "val_loss")] == [1, 2]
    synced = ws.run("sync", str(run_dir), env={**env, "MLFLOW_TRACKING_URI": server.uri})
    assert synced.returncode == 0, synced.stderr
    assert_history_on_server(client, run_id, run_dir)
    assert client.get_run(run_id).info.status == "FINISHED"


URI_PASSWORD = "URIPASS-" + "7" * 24
ENV_PASSWORD = "ENVPASS-" + "8" * 24
ENV_TOKEN = "TOKEN-" + "6" * 24


@pytest.mark.slow
def test_planted_mlflow_credentials_appear_nowhere(data_workspace: Workspace, server: Server) -> None:
    ws = data_workspace
    uri = server.uri.replace("http://", f"http://team:{URI_PASSWORD}@")
    (ws.root / "config.yaml").write_text(f"mlflow:\n  tracking_uri: {uri}\n  experiment_name: secret\n")
    env = {"MLFLOW_TRACKING_USERNAME": "team", "MLFLOW_TRACKING_PASSWORD": ENV_PASSWORD}
    outputs = []
    for args, extra in [((*SMALL, "--epochs=2"), {}),
                        (("resume", "RUN", "--epochs=3"), {"MLFLOW_TRACKING_TOKEN": ENV_TOKEN}),
                        (("sync", "RUN"), {}), (("report", "RUN"), {})]:
        args = tuple(str(ws.last_run()) if a == "RUN" else a for a in args)
        run = ws.fork if args[0] != "sync" and args[0] != "report" else ws.run  # runs: processes
        result = run(*args, env={**env, **extra})
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    run_dir = ws.last_run()
    client = MlflowClient(server.uri)
    run = client.get_run(mlflow_run_id(run_dir))
    assert [s for s, _ in steps(client, run.info.run_id, "val_loss")] == [1, 2, 3]
    sent = json.dumps([run.data.params, run.data.tags, sorted(run.data.metrics)])
    files = [p for root in (ws.root, server.folder) for p in root.rglob("*")
             if p.is_file() and p.name != "config.yaml"]
    for secret in (URI_PASSWORD, ENV_PASSWORD, ENV_TOKEN):
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert leaked == [], f"{secret[:7]} leaked into {leaked}"
        assert not any(secret in out for out in outputs), f"{secret[:7]} was printed"
        assert secret not in sent, f"{secret[:7]} was sent to MLflow"
    assert "team:***@127.0.0.1" in outputs[0]  # the URI is shown masked
    assert json.loads((run_dir / "run.json").read_text())["machine"]["mlflow"]["tracking_uri"] == \
        uri.replace(URI_PASSWORD, "***")


def test_missing_mlflow_gives_install_hint(data_workspace: Workspace) -> None:
    code = ("import sys; sys.modules['mlflow'] = None; from expkit.cli.main import main; "
            f"raise SystemExit(main([*{list(SMALL)!r}, '--epochs=1'], registry='lab.registry', "
            "prog='run.py'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=data_workspace.root,
                            env=data_workspace.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "pip install 'expkit[mlflow]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("how", "status", "code"), [
    ({"PYTHONPATH": HOOKS, "EXPKIT_TEST_AT": "step:3:INT"}, "stopped", 130),  # Ctrl-C
    ({"--optimizer": "sgd", "--lr": "1e12", "--restore_best": "false"}, "failed", 1),  # diverged
])
def test_stopped_and_failed_runs_end_their_mlflow_run_so(data_workspace: Workspace, server: Server,
                                                         how: dict[str, str], status: str,
                                                         code: int) -> None:
    flags = [f"{k}={v}" for k, v in how.items() if k.startswith("--")]
    env = {k: v for k, v in how.items() if not k.startswith("--")}
    run = data_workspace.fork if env else data_workspace.run  # a signal needs its own process
    result = run(*SMALL, "--epochs=2", *flags, env={**env, "MLFLOW_TRACKING_URI": server.uri})
    assert result.returncode == code, result.stderr
    run = MlflowClient(server.uri).get_run(mlflow_run_id(data_workspace.last_run()))
    assert run.data.tags["expkit.status"] == status
    assert run.info.status == {"stopped": "KILLED", "failed": "FAILED"}[status]
