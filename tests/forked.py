"""`run.py ARGS` in a process of its own, forked from a server that imported torch once.

The crash and stop tests start dozens of runs only to kill or signal them. A new interpreter
spends about 4 s importing torch (and torch._dynamo, which the first optimizer imports) before
the run begins; a child forked from multiprocessing's fork server, which imported them once,
starts at once. The child is a real, separate process: it runs `expkit.cli.main.main` (the function
run.py calls) in its own working directory and environment, dies of a real SIGKILL, handles
SIGINT/SIGTERM in its own main thread, and its exit status reads as subprocess's does
(-9 for a kill). The server never runs a torch op, so no thread pool is forked half-alive.

Tests of the command line as a program (exit codes of usage errors, stderr, the `expkit`
entry point) keep using real subprocesses (`Workspace.cli`).
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOOKS = Path(__file__).parent / "hooks" / "sitecustomize.py"
PRELOAD = ["torch", "torch._dynamo", "torch.optim", "expkit.cli.main", "lab.registry",
           "lab.experiments.mnist", "forked"]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def _main(root: str, env: dict[str, str], argv: list[str], out: str, err: str) -> None:
    """The child: the workspace's directory, environment and test hooks, then run.py's main."""
    os.chdir(root)
    sys.argv = [str(Path(__file__).parents[1] / "run.py"), *argv]  # as `python run.py ARGV`
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the process's own)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    if env.get("EXPKIT_TEST_AT") or env.get("EXPKIT_TEST_EVENTS") or env.get("EXPKIT_TEST_WRITES"):
        spec = importlib.util.spec_from_file_location("expkit_test_hooks", HOOKS)
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(importlib.util.module_from_spec(spec))  # reads os.environ
    from expkit.cli.main import main

    code = main(argv, registry="lab.registry", prog="run.py")
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def run_forked(root: Path, env: dict[str, str], argv: list[str], timeout: float = 300
               ) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `run.py ARGV` run in `root` with exactly `env`."""
    with tempfile.NamedTemporaryFile(suffix=".out", delete=False) as o, \
            tempfile.NamedTemporaryFile(suffix=".err", delete=False) as e:
        out, err = Path(o.name), Path(e.name)
    child = _context.Process(target=_main, args=(str(root), env, argv, str(out), str(err)))
    child.start()
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        raise TimeoutError(f"run.py {' '.join(argv)} still running after {timeout} s")
    try:
        return child.exitcode, out.read_text(), err.read_text()
    finally:
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(target: Callable[[int, int, str], None], world: int, folder: Path,
              timeout: float = 120, tries: int = 3) -> list[Any]:
    """`target(rank, port, out_file)` in `world` forked processes that form one process group
    (MASTER_PORT `port` on 127.0.0.1); each writes JSON to its out file; their values, by rank.
    A port taken between choosing it and binding it is another try with a new port."""
    for attempt in range(tries):
        port, outs = _free_port(), [folder / f"rank{r}-{attempt}.json" for r in range(world)]
        ranks = [_context.Process(target=target, args=(r, port, str(outs[r]))) for r in range(world)]
        for p in ranks:
            p.start()
        for p in ranks:
            p.join(timeout)
        for p in ranks:
            if p.exitcode is None:
                p.kill()
                p.join()
        if all(p.exitcode == 0 for p in ranks):
            return [json.loads(out.read_text()) for out in outs]
    raise AssertionError(f"{world} ranks did not all finish: exit codes {[p.exitcode for p in ranks]}")
