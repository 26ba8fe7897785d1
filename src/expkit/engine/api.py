"""The Python door: start a run, or resume one, from a notebook or a script.

    import expkit
    run = expkit.run("mnist", epochs=3, hidden_sizes=[64])   # the command line's flags
    run.summary()["test_acc"], run.history[-1]                # the same Run as expkit.runs()
    model = expkit.load_run(run.path).model                   # the trained model, one call away
    expkit.resume(run.path, epochs=5)                         # go on where it stopped

The flags are validated by the experiment's Args model exactly as on the command line: a bad
value raises UsageError with the same one-line messages (never SystemExit), and nothing is
written. The run directory, its record, the trackers and the reproduce command are those of a
command-line run; run.json's `entry` says "python", and `expkit reproduce RUN_DIR` re-runs it
from the command line. What a run changes process-wide (the random generators, deterministic
algorithms, signal handlers, the command prefix its messages suggest) is put back when it
returns, so that many runs in one process give the numbers of as many separate processes.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from expkit.config.parsing import parse_argv
from expkit.config.registry import Registry
from expkit.engine.experiment import BaseExperiment, ExperimentArgs
from expkit.errors import UsageError
from expkit.rundir.results import Run, read_run

PROG = "expkit"  # how a Python run's messages name the command line


def run(experiment: str | type[BaseExperiment[Any]] | ExperimentArgs, /, *,
        registry: str | None = None, show_plot: bool = False, **flags: Any) -> Run:
    """Train `experiment` (a registered id, an experiment class, or an Args instance whose
    values the flags override) with `flags` as keyword arguments (`epochs=3`,
    `hidden_sizes=[64]`, `use_cuda=False`), into a new run directory; returns the run.

    `registry` names a module with an EXPERIMENTS dict (default: every installed registry).
    In a Jupyter notebook progress is one line that updates in place, and `show_plot=True`
    shows the run's history.png below it. A stop (Ctrl-C, the kernel's stop button)
    checkpoints and returns the run, status "stopped"; a failure raises ExpkitError after the
    run directory says why."""
    from expkit.config.machine import load_machine_config
    from expkit.engine.runner import execute
    from expkit.utils.console import Console

    experiment_cls, base = _resolve(experiment, registry, flags)
    argv = [f"--experiment_id={base.pop('experiment_id')}", *as_flags(flags)]
    sources: dict[str, str] = {}
    args = parse_argv(experiment_cls.args_class, argv, PROG, base=base,
                      base_name="the Args given" if base else "", sources=sources)
    console = Console()
    machine = load_machine_config(announce=console.print)
    made = experiment_cls(args, machine, console)
    with process_state_kept():
        execute(made, argv=argv, sources=sources, extra_record={"entry": "python"})
    assert made.run_dir is not None
    return _shown(read_run(made.run_dir), show_plot)


def resume(run_dir: str | Path, /, *, registry: str | None = None, show_plot: bool = False,
           **flags: Any) -> Run:
    """Continue a stopped, killed or finished run from its checkpoints/last.pt (`epochs=N`
    trains on), as `expkit resume RUN_DIR --epochs=N` does; returns the run (its plot
    shown inline with `show_plot=True`, as `run` does)."""
    from expkit.engine.resume import resume_run

    reg = Registry.from_module(registry) if registry else Registry.from_entry_points()
    with process_state_kept():
        resume_run(Path(run_dir), as_flags(flags), reg, PROG)
    return _shown(read_run(run_dir), show_plot)


def _shown(done: Run, show_plot: bool) -> Run:
    """`done`, after showing its history.png when asked: inline in a notebook, else its path."""
    plot = done.path / "history.png"
    if show_plot and plot.is_file():
        from expkit.utils.notebook import in_notebook, show_image

        if in_notebook():
            show_image(plot)
        else:
            print(f"history plot: {plot}")
    return done


def as_flags(flags: dict[str, Any]) -> list[str]:
    """Keyword arguments as the command line's `--name=value` tokens (True -> true, None ->
    auto, lists and dicts as JSON)."""
    from expkit.engine.segments import as_flag

    return [f"--{name}={as_flag(value)}" for name, value in flags.items()]


def _resolve(experiment: str | type[BaseExperiment[Any]] | ExperimentArgs, registry: str | None,
             flags: dict[str, Any]) -> tuple[type[BaseExperiment[Any]], dict[str, Any]]:
    """The experiment class, and the values flags go on top of (an Args instance's; always
    with `experiment_id`)."""
    if isinstance(experiment, ExperimentArgs):
        base = experiment.model_dump(mode="json")
        return _registered(registry).load(experiment.experiment_id), base
    if isinstance(experiment, str):
        return _registered(registry).load(experiment), {"experiment_id": experiment}
    if isinstance(experiment, type) and issubclass(experiment, BaseExperiment):
        exp_id = flags.pop("experiment_id", None) or _id_of(experiment, registry)
        return experiment, {"experiment_id": exp_id}
    raise UsageError(f"expkit.run: got {experiment!r}; give an experiment id (\"mnist\"), an "
                     "experiment class or an Args instance")


def _registered(registry: str | None) -> Registry:
    return Registry.from_module(registry) if registry else Registry.from_entry_points()


def _id_of(experiment_cls: type[BaseExperiment[Any]], registry: str | None) -> str:
    """The id an experiment class is registered under (what reproduce and resume look up)."""
    target = f"{experiment_cls.__module__}:{experiment_cls.__qualname__}"
    reg = _registered(registry)
    found = [exp_id for exp_id in reg.ids() if reg.entries[exp_id] == target]
    if not found:
        raise UsageError(f"expkit.run: {experiment_cls.__name__} is in no registry; register it "
                         "(a line in your EXPERIMENTS dict) or pass experiment_id=...")
    return found[0]


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """Put back what a run changes process-wide: Python's, NumPy's and torch's random
    generators, deterministic algorithms (cuDNN's flags, and CUBLAS_WORKSPACE_CONFIG, which a
    deterministic run sets), and the command prefix the run's messages suggest. Signal
    handlers are put back by the run itself."""
    from expkit.utils import invocation

    python, numpy = random.getstate(), np.random.get_state()
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    workspace = os.environ.get(CUBLAS)
    try:
        with invocation.prefix_kept():
            invocation.remember_python()
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if workspace is None:
            os.environ.pop(CUBLAS, None)
        else:
            os.environ[CUBLAS] = workspace


#: the variable a deterministic run on CUDA needs (cuBLAS' reproducible workspace)
CUBLAS = "CUBLAS_WORKSPACE_CONFIG"
