"""A sweep's study: where it is stored, how it is opened, sampled and pruned, and the
recovery of trials whose worker died (see expkit.sweep.command for the command)."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expkit.config.machine import redact
from expkit.errors import ExpkitError
from expkit.rundir.dirs import process_alive, safe_name
from expkit.sweep.space import Space, grid_values, import_optuna

if TYPE_CHECKING:
    from expkit.sweep.spec import SweepSpec


def sweep_dir(results_dir: Path, spec_name: str) -> Path:
    """Where a sweep keeps its study (SQLite), spec, lock and sweep.png."""
    return Path(results_dir) / "sweeps" / safe_name(spec_name)


def storage_url(spec: SweepSpec, folder: Path) -> str:
    """The study's storage: --storage, or SQLite in the sweep's folder."""
    return spec.storage or f"sqlite:///{(folder / 'study.db').absolute()}"


def open_storage(url: str) -> Any:
    """An Optuna storage for `url`: RDB (SQLite waits for locks instead of failing; PostgreSQL),
    or `journal:PATH`, Optuna's journal file (suits a shared filesystem, where SQLite's
    locking does not hold)."""
    optuna = import_optuna()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:")).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ExpkitError("a PostgreSQL storage needs psycopg; install it with "
                              "pip install 'expkit[sweep]' 'psycopg[binary]'") from None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as e:  # sqlalchemy's errors: a bad URL, a server that does not answer
        raise ExpkitError(f"--storage {redact(url)}: cannot open it ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]})") from None


def sampler_for(spec: SweepSpec, spaces: dict[str, Space], worker: int) -> Any:
    """This worker's sampler: random or TPE, seeded with --seed + the worker's number. A grid
    needs none: each grid trial is enqueued with its point (`enqueue_next_point`), so that
    every worker walks the same grid in the same order."""
    optuna = import_optuna()
    seed = None if spec.seed is None else spec.seed + worker
    if spec.sampler in ("grid", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def grid_points(spaces: dict[str, Space]) -> list[dict[str, Any]]:
    """Every point of the grid, in one fixed order (the first space varies slowest)."""
    names = list(spaces)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid_values(spaces[n]) for n in names))]


def enqueue_next_point(study: Any, spaces: dict[str, Space]) -> bool:
    """Under the sweep's lock: make sure the next `study.ask()` gets a grid point that no trial
    has taken yet (a waiting trial, e.g. a failed one queued again, goes first). Returns False
    when every point has a trial: the grid is walked.

    Optuna's GridSampler hands out points by its own shuffle of the grid, seeded per process:
    workers with different seeds (or none) repeat points and skip others. Here the study
    itself is the record of which points are taken, whatever the number of workers."""
    optuna = import_optuna()
    trials = study.get_trials(deepcopy=False)
    if any(t.state == optuna.trial.TrialState.WAITING for t in trials):
        return True
    # a trial asked but not yet suggested holds its point in fixed_params only
    taken = {_point_key(t.params or t.system_attrs.get("fixed_params") or {}, spaces)
             for t in trials}
    for point in grid_points(spaces):
        if _point_key(point, spaces) not in taken:
            study.enqueue_trial(point)
            return True
    return False


def _point_key(params: dict[str, Any], spaces: dict[str, Space]) -> str:
    return json.dumps([str(params.get(name)) for name in spaces])


def pruner_for(spec: SweepSpec) -> Any:
    """--pruner median: Optuna's MedianPruner after 2 trials; otherwise none."""
    optuna = import_optuna()
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def target_trials(spec: SweepSpec, spaces: dict[str, Space]) -> int:
    """--trials, or fewer when a grid has fewer points."""
    if spec.sampler != "grid":
        return spec.trials
    size = math.prod(len(grid_values(s)) for s in spaces.values())
    return min(spec.trials, size)


def load_study(spec: SweepSpec, spaces: dict[str, Space], url: str, worker: int = 0) -> Any:
    """The study (created if new), with this worker's sampler and the sweep's pruner."""
    optuna = import_optuna()
    direction = "maximize" if spec.direction == "max" else "minimize"
    return optuna.create_study(storage=open_storage(url), study_name=spec.study_name,
                               direction=direction, load_if_exists=True,
                               sampler=sampler_for(spec, spaces, worker), pruner=pruner_for(spec))


def recover(study: Any) -> list[int]:
    """Before workers start: fail this machine's trials whose worker died, re-queue failed ones.

    Returns the numbers of the trials queued again (each failed trial is retried once).
    """
    optuna = import_optuna()
    state = optuna.trial.TrialState
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        attrs = trial.user_attrs
        if "slurm_job" in attrs:  # a SLURM worker's: its restarted job resumes it
            continue
        if attrs.get("host") == host and not process_alive(int(attrs.get("pid", 0))):
            study.tell(trial.number, state=state.FAIL)
    retried = set(study.user_attrs.get("retried", []))
    queued = []
    for trial in study.get_trials(deepcopy=False, states=(state.FAIL,)):
        # a trial that died before it had parameters has nothing to retry (queued with none,
        # a grid's would take a random point)
        if trial.number not in retried and "retry_of" not in trial.user_attrs and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            queued.append(trial.number)
    if queued:
        study.set_user_attr("retried", sorted(retried | set(queued)))
    return queued


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One local worker at a time in the block (count trials, then ask for one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def finished_count(study: Any) -> int:
    """How many trials are done (complete or pruned): what counts toward --trials."""
    optuna = import_optuna()
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED)))
