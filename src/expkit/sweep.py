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
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field, ValidationError, field_validator

from expkit.args import Args, flag_table, parse_argv
from expkit.config import redact
from expkit.errors import UsageError
from expkit.registry import Registry
from expkit.rundirs import safe_name
from expkit.sweep_space import Space, grid_values, import_optuna, parse_space
from expkit.sweep_study import (
    finished_count,
    load_study,
    open_storage,
    recover,
    storage_url,
    sweep_dir,
    target_trials,
)
from expkit.sweep_summary import summarize

if TYPE_CHECKING:
    from expkit.experiment import ExperimentArgs

SWEEP_OPTIONS = ("name", "trials", "space", "direction", "sampler", "pruner", "storage", "workers",
                 "seed", "sweep", "status", "launcher")


class SweepSpec(Args):
    """A sweep: which experiment, how many trials, what to search, and where the study lives."""

    experiment_id: str = Field(description="the registered experiment every trial runs")
    name: str | None = Field(None, description="the study's name; auto = the experiment id")
    trials: int = Field(20, ge=1, description="how many finished (complete or pruned) trials in all")
    space: dict[str, str] = Field(description="flag -> loguniform:LO:HI | uniform:LO:HI | "
                                  "int:LO:HI[:STEP] | logint:LO:HI | choice:A,B,...")
    direction: Literal["max", "min"] | None = Field(
        None, description="maximize or minimize --monitor; auto = the experiment's --monitor_mode")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna sampler")
    pruner: Literal["none", "median"] = Field("none", description="stop bad trials early")
    storage: str | None = Field(None, description="Optuna storage URL; auto = SQLite at "
                                "results/sweeps/<name>/study.db")
    workers: int = Field(1, ge=1, description="worker processes (local), or worker jobs (SLURM)")
    launcher: Literal["local", "slurm"] = Field("local", description="where workers run: local "
                                                "processes, or SLURM batch jobs (--slurm_* flags)")
    seed: int | None = Field(None, ge=0, description="sampler seed (worker k uses seed + k) and "
                             "every trial's training seed")
    args: list[str] = Field(default_factory=list, description="fixed flags for every trial")

    @field_validator("direction", mode="before")
    @classmethod
    def _long_direction(cls, value: Any) -> Any:
        return {"maximize": "max", "minimize": "min"}.get(value, value)

    @property
    def study_name(self) -> str:
        """The study's name (also its folder under results/sweeps)."""
        return self.name or self.experiment_id


# ---- the command line --------------------------------------------------------------------


def parse_sweep_argv(argv: list[str]) -> tuple[SweepSpec | None, str | None, dict[str, Any]]:
    """(spec, --status name, machine-independent options) from `expkit sweep ...` argv."""
    from expkit.mappings import read_mapping

    values: dict[str, Any] = {}
    spaces: dict[str, str] = {}
    fixed: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if name in SWEEP_OPTIONS:
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise UsageError(f"--{name}: needs a value, e.g. --{name}=..."
                                     if name != "space" else
                                     "--space: needs FLAG=KIND:SPEC, e.g. --space lr=loguniform:1e-4:1e-2")
                value, i = argv[i + 1], i + 1
            if name == "space":
                flag, sep, spec = value.partition("=")
                if not sep or not flag:
                    raise UsageError(f"--space {value}: expected FLAG=KIND:SPEC, e.g. "
                                     "--space lr=loguniform:1e-4:1e-2")
                spaces[flag.lstrip("-")] = spec
            elif name in values:
                raise UsageError(f"--{name}: given 2 times; give it once")
            else:
                values[name] = value
        else:
            fixed.append(token)
        i += 1
    status = values.pop("status", None)
    base: dict[str, Any] = {}
    if "sweep" in values:
        base, _ = read_mapping(Path(values.pop("sweep")), "a sweep (--sweep)")
    for token in fixed:
        if token.startswith("--experiment_id"):
            values["experiment_id"] = token.partition("=")[2]
    fixed = [t for t in fixed if not t.startswith("--experiment_id")]
    merged = {**base, **values}
    merged["space"] = {**(base.get("space") or {}), **spaces}
    merged["args"] = [*(base.get("args") or []), *fixed]
    if status is not None:
        return None, status, merged
    try:
        return SweepSpec.model_validate(merged), None, merged
    except ValidationError as e:
        from expkit.args import describe_validation_error

        raise UsageError(*describe_validation_error(e, None, where="sweep ")) from None


def prepare(spec: SweepSpec, registry: Registry, prog: str) -> tuple[dict[str, Space], Any]:
    """Check the space and the fixed flags against the experiment; (spaces, experiment class)."""
    if safe_name(spec.study_name) != spec.study_name:
        raise UsageError(f"--name: got {spec.study_name!r}; use letters, digits, '-', '_', '.' "
                         "(it names a folder)")
    if not spec.space:
        raise UsageError("sweep needs at least one --space FLAG=KIND:SPEC, e.g. "
                         "--space lr=loguniform:1e-4:1e-2")
    experiment_cls = registry.load(spec.experiment_id)
    args_cls = experiment_cls.args_class
    table = flag_table(args_cls)
    spaces = {}
    for flag, text in spec.space.items():
        if flag not in table:
            import difflib

            near = difflib.get_close_matches(flag, list(table), n=1)
            raise UsageError(f"--space {flag}=...: {spec.experiment_id} has no flag --{flag}"
                             + (f"; did you mean --{near[0]}?" if near else ""))
        spaces[flag] = parse_space(flag, text)
    for flag in spaces:
        if any(t == f"--{flag}" or t.startswith(f"--{flag}=") for t in spec.args):
            raise UsageError(f"--{flag}: both fixed and in --space; give it once")
    samples = [spaces[f].choices if spaces[f].kind == "choice" else [spaces[f].low, spaces[f].high]
               for f in spaces]
    for flag, values in zip(spaces, samples, strict=True):  # every bound/choice must be a valid flag
        for value in values:
            if spaces[flag].kind in ("int", "logint") and value is not None:
                value = int(value)
            try:
                parse_argv(args_cls, [f"--experiment_id={spec.experiment_id}", *spec.args,
                                      f"--{flag}={value}"], prog)
            except UsageError as e:
                if not any(f"--{flag}" in line for line in e.lines):
                    raise  # a fixed flag is wrong
                raise UsageError(*(f"--space {flag}={spec.space[flag]}: {line}" for line in e.lines),
                                 hint=e.hint) from None
    from expkit.experiment import resolve_monitor  # imports torch: only once a sweep starts

    args = cast("ExperimentArgs", parse_argv(
        args_cls, [f"--experiment_id={spec.experiment_id}", *spec.args], prog))
    resolve_monitor(experiment_cls, args)
    mode = args.monitor_mode
    if spec.direction is not None and spec.direction != mode:
        raise UsageError(f"--direction {spec.direction}: but --monitor {args.monitor} has "
                         f"--monitor_mode={mode}; drop --direction (it follows --monitor), or "
                         "monitor another metric")
    spec.direction = spec.direction or mode  # optimize what runs monitor
    if spec.sampler == "grid":
        for space in spaces.values():
            grid_values(space)
    return spaces, experiment_cls


def run_sweep(argv: list[str], registry: Registry, prog: str, registry_module: str | None) -> int:
    """`expkit sweep ...`: create (or reopen) the study, run the workers, print the summary."""
    from expkit.config import load_machine_config
    from expkit.slurm import split_flags

    slurm_flags, argv = split_flags(argv)
    spec, status_name, options = parse_sweep_argv(argv)
    if slurm_flags and (spec is None or spec.launcher != "slurm"):
        raise UsageError(f"{next(iter(slurm_flags))}: --slurm_* flags go with --launcher=slurm")

    if status_name is not None:
        machine = load_machine_config(announce=print)
        return show_status(status_name, options.get("storage"), machine.results_dir)
    assert spec is not None
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
        _submit_workers(spec, registry_module, prog, folder, machine, slurm_flags)
        return 0
    if spec.workers == 1:
        from expkit.sweep_worker import run_worker

        code = run_worker(spec, registry, prog)
    else:
        code = _run_workers(spec, registry_module, prog)
    summarize(study, folder)
    return code


def _run_workers(spec: SweepSpec, registry_module: str | None, prog: str) -> int:
    """Start `spec.workers` local worker processes and wait for them all."""
    payload = json.dumps({"spec": spec.model_dump(mode="json"), "registry": registry_module,
                          "prog": prog})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, "-m", "expkit.sweep_worker", payload, str(k)], env=env)
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
    from expkit.slurm import job_script, sbatch, settings_with

    settings = settings_with(machine.slurm, given)
    payload = json.dumps({"spec": spec.model_dump(mode="json"), "registry": registry_module,
                          "prog": prog})
    jobs_folder = folder / "slurm"
    jobs_folder.mkdir(exist_ok=True)
    jobs = []
    for k in range(spec.workers):
        script = jobs_folder / f"worker{k}.sh"
        script.write_text(job_script(jobs_folder, settings, ["-m", "expkit.sweep_worker", payload, str(k)],
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

