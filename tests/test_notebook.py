"""The Python door in a real Jupyter kernel (ipykernel, driven by nbclient and jupyter_client):
the example notebook runs top to bottom with one live progress line and its plot inline, and
the kernel's stop button checkpoints the run, returns it, and leaves the kernel alive."""

from __future__ import annotations

import ast
import csv
import json
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager, start_new_kernel
from nbclient import NotebookClient

from conftest import REPO, Workspace

NOTEBOOK = REPO / "examples" / "notebook.ipynb"


@pytest.fixture
def kernel_env(data_workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """The workspace's environment for the kernels this test starts (they inherit it)."""
    for key in list(os.environ):
        if key.startswith(("EXPKIT_", "WANDB_", "MLFLOW_")) or key == "PYTHONPATH":
            monkeypatch.delenv(key)
    for key, value in data_workspace.env.items():
        monkeypatch.setenv(key, value)
    if "HOME" in data_workspace.env:  # IPython keeps its profile there
        Path(data_workspace.env["HOME"]).mkdir(parents=True, exist_ok=True)
    yield data_workspace


def _result(cell: Any) -> str:
    """What a code cell's last expression showed (its Out[n])."""
    return next(_text(o) for o in cell.outputs if o.output_type == "execute_result")


def _text(output: Any) -> str:
    if output.output_type == "stream":
        return str(output.text)
    return str(output.get("data", {}).get("text/plain", ""))


@pytest.mark.slow
def test_the_example_notebook_runs_with_one_live_line_and_its_plot(kernel_env: Workspace) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(kernel_env.root)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    training = code[0].outputs
    lines = [o for o in training if o.output_type == "display_data" and "image/png" not in o.data]
    assert len(lines) == 1, "one progress line, updated in place"
    assert _text(lines[0]).startswith("epoch 3/3") and "val_acc" in _text(lines[0])
    printed = "".join(_text(o) for o in training if o.output_type == "stream")
    assert "epoch 1/3" not in printed, "no line per epoch in the notebook"
    assert "run directory:" in printed
    assert any("image/png" in o.get("data", {}) for o in training), "history plot inline"
    assert _result(code[1]).startswith("('finished', ")
    assert "MLP" in _result(code[3]) or "Linear" in _result(code[3])
    assert _result(code[4]) == "('finished', 5)"
    run_dir = kernel_env.last_run()
    log = (run_dir / "log.txt").read_text()
    assert all(f"epoch {i}/3" in log for i in (1, 2, 3)), "the epoch lines are still logged"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["entry"] == "python"
    assert ast.literal_eval(_result(code[5])) == record["command"]


def _run_cell(km: KernelManager, client: Any, code: str, timeout: float = 300) -> tuple[str, str]:
    """(reply status, what the cell printed) of one cell."""
    msg_id = client.execute(code)
    printed = []
    while True:
        message = client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    return reply["content"]["status"], "".join(printed)


def _epochs_done(results: Path) -> int:
    """Rows of history.csv of the one run under results/mnist (0 before there is one)."""
    files = list(results.glob("mnist/*/history.csv"))
    if not files:
        return 0
    with files[0].open() as f:
        return sum(1 for _ in csv.DictReader(f))


@pytest.mark.slow
def test_the_kernels_stop_button_checkpoints_returns_the_run_and_the_kernel_lives_on(
        kernel_env: Workspace) -> None:
    km, client = start_new_kernel(kernel_name="python3", cwd=str(kernel_env.root))
    try:
        msg_id = client.execute('import expkit\nrun = expkit.run("mnist", dataset="digits", '
                                'epochs=100000, hidden_sizes=[16], seed=0)')
        deadline = time.monotonic() + 300  # bounds a hang only: the wait is for an epoch on disk
        while _epochs_done(kernel_env.results) < 2:
            assert time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.2)
        km.interrupt_kernel()  # what Jupyter's stop button does
        while True:
            reply = client.get_shell_msg(timeout=300)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "ok", reply["content"]  # returned, not raised
        with pytest.raises(queue.Empty):
            client.get_shell_msg(timeout=0.1)
        status, printed = _run_cell(km, client, 'print(run.status, len(run.history), '
                                    '(run.path / "checkpoints" / "last.pt").is_file())')
        assert status == "ok" and km.is_alive()
        state, epochs, saved = printed.split()
        assert state == "stopped" and int(epochs) >= 2 and saved == "True"
        status, printed = _run_cell(km, client, "more = expkit.resume(run.path, epochs=len("
                                    "run.history) + 1); print(more.status, len(more.history))")
        assert status == "ok" and printed.splitlines()[-1].split() == ["finished", str(int(epochs) + 1)]
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
