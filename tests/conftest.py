"""Shared fixtures: a throwaway workspace with its own config.yaml, generated IDX data, a CLI runner."""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from browser import Browser, find_chromium
from expkit.data.idx import write_idx

REPO = Path(__file__).resolve().parents[1]

# Property tests: the suite (`make test`, CI) draws the same examples every run, so whether it
# passes never depends on a draw; `make fuzz` explores new inputs with many more examples.
_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("suite", derandomize=True, database=None, max_examples=300,
                          deadline=None, suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("explore", max_examples=5000, deadline=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def pytest_configure(config: pytest.Config) -> None:
    """In the controlling process: start the session's MLflow server in the background when the
    MLflow tests are among those asked for (tests/mlflow_server.py); workers inherit its address."""
    import importlib.util

    if hasattr(config, "workerinput") or importlib.util.find_spec("mlflow") is None:
        return
    wanted = [str(a) for a in config.args] or ["tests"]
    if not any("test_mlflow" in a or Path(a.split("::")[0]).is_dir() for a in wanted):
        return
    from mlflow_server import SHARED, launch

    folder = Path(tempfile.mkdtemp(prefix="expkit-mlflow-"))
    server = launch(folder, f"sqlite:///{folder / 'store.db'}")
    os.environ[SHARED] = json.dumps({"uri": server.uri, "folder": str(folder), "pid": server.pid})
    config.stash[_MLFLOW] = server


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the session's MLflow server, if this process started one."""
    server = config.stash.get(_MLFLOW, None)
    if server is not None:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


_MLFLOW = pytest.StashKey[Any]()


#: test files whose tests take longest (whole processes, ranks, clusters), longest first
_HEAVIEST = ("test_packaging.py", "test_scaffold.py", "test_slurm.py", "test_distributed.py",
             "test_crash.py", "test_security.py", "test_sweep.py", "test_performance_paths.py",
             "test_augment.py", "test_repeat.py", "test_python_api.py", "test_docs.py",
             "test_notebook.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each xdist worker starts on its share of the slow tests, the short ones after them: the
    suite never ends waiting on one long test that started last. (--dist worksteal hands worker
    k the k-th contiguous slice of this order, then lets idle workers steal from the end.)"""
    workers = config.getoption("numprocesses", None)
    n = workers if isinstance(workers, int) and workers > 1 else 1
    slow = [item for item in items if item.get_closest_marker("slow")]
    # the longest first (30-50 s each, `--durations`): the last to start are short ones
    slow.sort(key=lambda item: _HEAVIEST.index(item.path.name) if item.path.name in _HEAVIEST
              else len(_HEAVIEST))
    fast = [item for item in items if not item.get_closest_marker("slow")]
    ordered: list[pytest.Item] = []
    for k in range(n):
        share = slow[k::n]
        size = len(items) // n if k < n - 1 else len(items) - len(ordered)
        take = max(size - len(share), 0)
        ordered += share + fast[:take]
        fast = fast[take:]
    items[:] = ordered + fast
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _children() -> dict[int, list[int]]:
    """Parent pid -> its children's pids, for every process on the machine."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first found first)."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Whatever a test's outcome, no process it started outlives it: each one still running at
    the end (a run an assertion left behind, a torchrun and its ranks, a plot worker) is killed
    with everything it started. Longer-lived fixtures (the browser) start before this one."""
    started: list[subprocess.Popen[bytes]] = []
    original = subprocess.Popen.__init__

    def record(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        started.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", record)
        yield
    for proc in started:
        if proc.poll() is None:
            for pid in [proc.pid, *_descendants(proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)


def make_images(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k lights up horizontal band k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    band = size // 10
    for k in range(10):
        images[labels == k, k * band:(k + 1) * band, :] = 220
    return images, labels


def write_idx_set(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> list[Path]:
    """The four MNIST-named IDX files of a generated dataset in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = make_images(n_train, seed), make_images(n_test, seed + 1)
    arrays = (train[0], train[1], test[0], test[1])
    for name, array in zip(IDX_FILES, arrays, strict=True):
        write_idx(folder / name, array)
    return [folder / name for name in IDX_FILES]


def merged_env(base: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
    """`base` updated with `extra`; a PYTHONPATH in both is joined (extra's first), so that a
    test's hooks come before the tree under test, never instead of it."""
    env = {**base, **(extra or {})}
    if extra and extra.get("PYTHONPATH") and base.get("PYTHONPATH"):
        env["PYTHONPATH"] = extra["PYTHONPATH"] + os.pathsep + base["PYTHONPATH"]
    return env


@dataclass
class Workspace:
    """A working directory with a config.yaml whose cache/results live inside it."""

    root: Path
    env: dict[str, str]

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def run_dirs(self, experiment_id: str = "mnist") -> list[Path]:
        """The experiment's run directories, oldest first by when they started (two runs
        started within one second do not sort by their random ids)."""
        from expkit.rundir.dirs import start_order

        folder = self.results / experiment_id
        found = [p for p in folder.iterdir() if p.is_dir()] if folder.exists() else []
        return sorted(found, key=lambda p: start_order(_record(p), p))

    def cli(self, *args: str, entry: str = "run.py", timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `python run.py ARGS` (or `expkit`, `python -m expkit`) in the workspace."""
        if entry == "run.py":
            cmd = [sys.executable, str(REPO / "run.py")]
        elif entry == "expkit":
            cmd = [str(Path(sys.executable).parent / "expkit")]
        else:
            cmd = [sys.executable, "-m", "expkit"]
        return subprocess.run([*cmd, *args], cwd=self.root, env=merged_env(self.env, env),
                              capture_output=True, text=True, timeout=timeout)

    def fork(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
             ) -> subprocess.CompletedProcess[str]:
        """`run.py ARGS` in a process of its own that starts without importing torch again
        (tests/forked.py): for runs a test kills or signals. Exit status as subprocess's."""
        from forked import run_forked

        code, out, err = run_forked(self.root, merged_env(self.env, env), list(args), timeout)
        return subprocess.CompletedProcess(["run.py", *args], code, out, err)

    def run(self, *args: str, env: dict[str, str] | None = None,
            registry: str = "lab.registry") -> subprocess.CompletedProcess[str]:
        """`run.py ARGS` inside this test process: expkit.cli.main.main, the function run.py calls,
        with the workspace as working directory and its environment.

        For tests of what a run does (training, checkpoints, records): it skips only the
        seconds a new process spends importing torch. Tests of the command line as a process
        (exit codes, stderr, signals, kills) use `cli`.
        """
        import contextlib
        import io

        import torch

        from expkit.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        saved_env, cwd = dict(os.environ), os.getcwd()
        deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            os.environ.clear()
            os.environ.update({**self.env, **(env or {})})
            os.chdir(self.root)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args), registry=registry, prog="run.py")
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            torch.use_deterministic_algorithms(deterministic)  # --deterministic is process-wide
        return subprocess.CompletedProcess(["run.py", *args], code, out.getvalue(), err.getvalue())

    def last_run(self, experiment_id: str = "mnist") -> Path:
        runs = self.run_dirs(experiment_id)
        assert runs, f"no run directory under {self.results / experiment_id}"
        return runs[-1]

    @staticmethod
    def metrics(run_dir: Path) -> dict:
        return json.loads((run_dir / "metrics.json").read_text())


def _record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


@functools.cache
def _font_list() -> Path | None:
    """matplotlib's font list, built once per test process: each test's MPLCONFIGDIR starts
    with a copy, so that its first history.png does not scan the system's fonts again (~0.7 s
    of CPU per test otherwise)."""
    folder = Path(tempfile.mkdtemp(prefix="expkit-mpl-"))
    atexit.register(shutil.rmtree, folder, True)
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], timeout=120,
                   env={**os.environ, "MPLCONFIGDIR": str(folder)}, capture_output=True, check=False)
    return next(iter(sorted(folder.glob("fontlist-*.json"))), None)


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXPKIT_", "WANDB_", "MLFLOW_")) and k != "PYTHONPATH"}
    # the processes a test starts import the tree under test (a copy of it, in `make mutants`),
    # never whatever expkit is installed
    env["PYTHONPATH"] = str(REPO / "src")
    fonts = _font_list()
    if fonts is not None:
        (tmp / ".mpl").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fonts, tmp / ".mpl" / fonts.name)
    # nothing a test runs writes outside its temp folder: HOME (wandb's ~/.cache and ~/.config,
    # netrc), XDG caches, matplotlib's config and torch.compile's generated code all live in it
    env.update(MPLCONFIGDIR=str(tmp / ".mpl"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2",
               HOME=str(tmp / "home"), XDG_CACHE_HOME=str(tmp / "home" / ".cache"),
               XDG_CONFIG_HOME=str(tmp / "home" / ".config"),
               WANDB_CACHE_DIR=str(tmp / "home" / ".cache" / "wandb"),
               WANDB_CONFIG_DIR=str(tmp / "home" / ".config" / "wandb"),
               TORCHINDUCTOR_CACHE_DIR=str(tmp / "home" / ".cache" / "torchinductor"))
    return env


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace (no config.yaml yet: the first run writes it)."""
    root = tmp_path / "ws"
    root.mkdir()
    return Workspace(root, _clean_env(tmp_path))


@pytest.fixture
def data_workspace(workspace: Workspace) -> Workspace:
    """A workspace whose cache holds small generated MNIST and Fashion-MNIST IDX files."""
    write_idx_set(workspace.cache / "mnist")
    write_idx_set(workspace.cache / "fashion_mnist", seed=5)
    return workspace


#: arguments that make a run tiny
TINY = ("--epochs=1", "--max_train_samples=200", "--seed=0")


def register(folder: Path, monkeypatch: pytest.MonkeyPatch, exp_id: str, source: str,
             cls: str) -> str:
    """An experiment module `exp_id` holding `source` and a registry of it, importable from
    `folder`; returns the registry's module name (for `Workspace.run(registry=...)`)."""
    (folder / f"{exp_id}.py").write_text(source)
    (folder / f"{exp_id}_registry.py").write_text(f"EXPERIMENTS = {{'{exp_id}': '{exp_id}:{cls}'}}\n")
    monkeypatch.syspath_prepend(str(folder))
    return f"{exp_id}_registry"


# ---- PostgreSQL: a throwaway cluster on 127.0.0.1 (the shared sweep study, MLflow's store) ----------------


def _pg_bin() -> Path | None:
    for pattern in ("/usr/lib/postgresql/*/bin/pg_ctl", "/usr/local/bin/pg_ctl"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PG_PASSWORD = "PGPASS-" + "5" * 20  # the database password: in the --storage URL, nowhere else


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 with an `optuna` database that takes a password over
    TCP (scram-sha-256); its URL, password included. Run as non-root."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL test: .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    # outside pytest's tmp folder, which only root may enter: the server runs as another user
    folder = Path(tempfile.mkdtemp(prefix="expkit-pg-"))
    (folder / "pw").write_text(PG_PASSWORD + "\n")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        for path in (folder, folder / "pw"):
            shutil.chown(path, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"

    def pg(*cmd: str, check: bool = True) -> bool:
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PGPASSWORD": PG_PASSWORD})
        assert done.returncode == 0 or not check, f"{cmd[0]} failed: {done.stdout}{done.stderr}"
        return done.returncode == 0

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={folder / 'pw'}",
       "--auth-local=trust", "--auth-host=scram-sha-256")
    try:
        for _ in range(5):  # a free port can be taken before the server binds it: take another
            port = free_port()
            if pg(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "server.log"),
                  "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}", "start", check=False):
                break
        else:
            pytest.fail(f"PostgreSQL did not start: {(folder / 'server.log').read_text()[-2000:]}")
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql+psycopg://postgres:{PG_PASSWORD}@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium per xdist worker (tests/browser.py), started on first use."""
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: .ci/run installs Debian's chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    chromium = Browser(executable)
    yield chromium
    chromium.close()
