"""A real `mlflow server` on 127.0.0.1 for the tests: SQLite (or PostgreSQL) store, artifacts
proxied into a local folder. Its start takes ~15 s (imports and the store's migrations), so
the test session starts the shared one in the background at its very start (conftest's
pytest_configure, in the xdist controller) and the tests find it through EXPKIT_TEST_MLFLOW."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED = "EXPKIT_TEST_MLFLOW"  # {"uri", "folder", "pid"} of the session's server


@dataclass
class Server:
    uri: str
    folder: Path  # its store and artifacts: grepped for secrets
    pid: int

    def stop(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        for _ in range(300):
            try:
                os.waitpid(self.pid, os.WNOHANG)
                os.kill(self.pid, 0)
            except (ChildProcessError, ProcessLookupError):
                return
            time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(folder: Path, backend: str) -> Server:
    """Start `mlflow server` in its own process group; returns at once (see `healthy`)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (folder / "server.log").open("ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--backend-store-uri", backend,
             "--artifacts-destination", str(folder / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=folder)
    return Server(f"http://127.0.0.1:{port}", folder, proc.pid)


def healthy(server: Server, timeout: float = 180) -> bool:
    """Wait until the server answers /health; False if its process died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(server.pid, 0)
            with open(f"/proc/{server.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except (ProcessLookupError, OSError):
            return False
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=5) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    return False


def start_mlflow(folder: Path, backend: str) -> Server:
    """A server that answers (a port taken meanwhile gets another try)."""
    for _ in range(3):
        server = launch(folder, backend)
        if healthy(server):
            return server
        server.stop()
    pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-3000:]}")


def shared_server() -> Server | None:
    """The session's background server, once it answers; None when there is none."""
    data = os.environ.get(SHARED)
    if not data:
        return None
    info = json.loads(data)
    server = Server(info["uri"], Path(info["folder"]), int(info["pid"]))
    return server if healthy(server) else None
