"""Hyperparameter sweeps with Optuna: each trial a normal run, one study in SQLite or PostgreSQL.

    expkit sweep --experiment_id=mnist --trials 20 --space lr=loguniform:1e-4:1e-2 \\
        --space hidden_sizes=choice:[64],[128,64] --direction max --workers 2

The study is created once, before any worker starts (Optuna workers racing to create a fresh
storage crash on both backends). Workers (local processes, or the same command on other
machines with `--storage postgresql+psycopg://...`) ask the study for parameters, train a run
with them, report the monitored metric each epoch (so `--pruner median` can stop bad trials
early) and tell the best value. Re-running the command resumes the sweep: finished trials
stay, failed or interrupted ones are retried once, and the total stays `--trials`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from expkit.config.machine import redact
from expkit.config.registry import Registry
from expkit.errors import UsageError
from expkit.sweep.space import import_optuna
from expkit.sweep.spec import SweepCommand, SweepSpec, parse_sweep_argv, prepare
from expkit.sweep.study import (
    finished_count,
    load_study,
    open_storage,
    recover,
    storage_url,
    sweep_dir,
    target_trials,
)
from expkit.sweep.summary import summarize


def run_sweep(argv: list[str], registry: Registry, prog: str, module: str | None) -> int:
    """`expkit sweep ...`: create (or reopen) the study, run the workers, print the summary.
    `module` is the registry module the workers load (None: the installed registries)."""
    from expkit.config.machine import load_machine_config

    call = parse_sweep_argv(argv)
    if call is None:
        from expkit.config.args import command_help

        command_help(SweepCommand, prog, f"{prog} sweep --experiment_id=ID --space "
                     "FLAG=KIND:SPEC [...] [options] [experiment flags]\n"
                     f"       {prog} sweep --status NAME [--storage URL]", __doc__ or "")
        return 0
    if call.status is not None:
        machine = load_machine_config(announce=print)
        return show_status(call.status, call.storage, machine.results_dir)
    assert call.spec is not None
    spec, slurm_flags = call.spec, call.slurm
    spaces, _ = prepare(spec, registry, prog)  # before anything is written
    machine = load_machine_config(announce=print)
    folder = sweep_dir(machine.results_dir, spec.study_name)
    folder.mkdir(parents=True, exist_ok=True)
    url = storage_url(spec, folder)
    study = load_study(spec, spaces, url)  # created here, once, before any worker starts
    (folder / "sweep.json").write_text(json.dumps(
        {**spec.model_dump(mode="json"), "storage": redact(url)}, indent=2) + "\n")
    retried = recover(study)
    done = finished_count(study)
    print(f"sweep {spec.study_name}: {done}/{target_trials(spec, spaces)} trials done, "
          f"{spec.workers} worker{'s' if spec.workers > 1 else ''}, storage {redact(url)}"
          + (f"; retrying failed trials {retried}" if retried else ""), flush=True)
    if spec.launcher == "slurm":
        _submit_workers(spec, module, prog, folder, machine, slurm_flags)
        return 0
    if spec.workers == 1:
        from expkit.sweep.worker import run_worker

        code = run_worker(spec, registry, prog)
    else:
        code = _run_workers(spec, module, prog)
    summarize(study, folder)
    return code


def _run_workers(spec: SweepSpec, registry_module: str | None, prog: str) -> int:
    """Start `spec.workers` local worker processes and wait for them all."""
    payload = json.dumps({"spec": spec.model_dump(mode="json"), "registry": registry_module,
                          "prog": prog})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, "-m", "expkit.sweep.worker", payload, str(k)], env=env)
             for k in range(spec.workers)]
    codes = []
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the same SIGINT: let them stop their trials
        codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


def _submit_workers(spec: SweepSpec, registry_module: str | None, prog: str, folder: Path,
                    machine: Any, given: dict[str, Any]) -> list[str]:
    """`--launcher=slurm`: one batch job per worker, each pulling trials from the study; a
    requeued worker resumes the trial it was running. Scripts and output in SWEEP/slurm/."""
    from expkit.slurm.jobs import job_script, sbatch, settings_with

    settings = settings_with(machine.slurm, given)
    payload = json.dumps({"spec": spec.model_dump(mode="json"), "registry": registry_module,
                          "prog": prog})
    jobs_folder = folder / "slurm"
    jobs_folder.mkdir(exist_ok=True)
    jobs = []
    for k in range(spec.workers):
        script = jobs_folder / f"worker{k}.sh"
        script.write_text(job_script(jobs_folder, settings, ["-m", "expkit.sweep.worker", payload, str(k)],
                                     Path.cwd(), f"expkit-sweep-{spec.study_name}-w{k}",
                                     stem=f"worker{k}"))
        jobs.append(sbatch(script))
        print(f"submitted SLURM job {jobs[-1]}: worker {k} (output {jobs_folder}/worker{k}-{jobs[-1]}.out)")
    print(f"follow it with: {prog} sweep --status {spec.study_name}")
    return jobs


def show_status(name: str, storage: str | None, results_dir: Path) -> int:
    """`expkit sweep --status NAME`: the table, the best trial and sweep.png of an existing sweep."""
    optuna = import_optuna()
    folder = sweep_dir(results_dir, name)
    url = storage or f"sqlite:///{(folder / 'study.db').absolute()}"
    if storage is None and not (folder / "study.db").is_file():
        raise UsageError(f"no sweep {name!r} under {results_dir / 'sweeps'} (no study.db); "
                         "start one with: expkit sweep --experiment_id=ID --space ...")
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise UsageError(f"--status {name}: no such study in {redact(url)}") from None
    folder.mkdir(parents=True, exist_ok=True)
    summarize(study, folder)
    return 0

