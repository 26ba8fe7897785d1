"""The commands that hand work to a cluster or a tracker: `submit` (a SLURM batch job),
`job` (what that job runs), `sync` (send finished runs to MLflow).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from expkit.cli.commands import parse_run
from expkit.cli.flags import JobCommand, RunFlags, SubmitCommand, SyncCommand, options
from expkit.cli.options import Context
from expkit.config.registry import Registry
from expkit.errors import ExpkitError, UsageError


def cmd_submit(argv: list[str], ctx: Context) -> int:
    """`expkit submit [--slurm_* ...] RUN FLAGS`: validate the run's flags, make its run
    directory, write the job script there and sbatch it."""
    from expkit.config.machine import load_machine_config
    from expkit.engine.experiment import resolve_monitor
    from expkit.rundir.dirs import create_run_dir
    from expkit.slurm.jobs import FOLDER, settings_with, slurm_given, submit

    sources: dict[str, str] = {}
    flags, rest = options(SubmitCommand, argv, ctx.prog, f"{ctx.prog} submit [--slurm_* ...] "
                          "--experiment_id=ID [experiment flags]", forward=True, sources=sources)
    if flags is None:
        return 0
    parsed = parse_run(flags, rest, ctx)
    if parsed is None:
        return 0
    experiment_cls, args, _ = parsed
    resolve_monitor(experiment_cls, args)
    ctx.work_started = True
    machine = load_machine_config(announce=print)
    settings = settings_with(machine.slurm, slurm_given(flags.slurm, sources))
    run_argv = [f"--experiment_id={args.experiment_id}",
                *([f"--config={flags.config}"] if flags.config else []), *rest]
    if shutil.which("sbatch") is None:
        raise ExpkitError("expkit submit needs SLURM's sbatch on the PATH (submit from a login node)")
    run_dir = create_run_dir(machine.results_dir, args.experiment_id)
    try:
        job = submit(run_dir, run_argv, settings, ["-m", "expkit", "job", str(run_dir)],
                     args.experiment_id, ctx.module)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing half-made is left behind
        raise
    print(f"submitted SLURM job {job}: {run_dir}")
    print(f"  script {run_dir / FOLDER / 'job.sh'}; output {run_dir / FOLDER}/job-{job}.out and .err")
    return 0


def cmd_job(argv: list[str], ctx: Context) -> int:
    """`expkit job RUN_DIR`, inside a SLURM job: start the run into RUN_DIR, or resume it from
    its last checkpoint when an earlier attempt made one."""
    flags, _ = options(JobCommand, argv, ctx.prog, f"{ctx.prog} job RUN_DIR")
    if flags is None:
        return 0
    from expkit.slurm.jobs import FOLDER, start_attempt
    from expkit.training.checkpoint import LAST

    ctx.work_started = True
    registry, prog = ctx.registry, ctx.prog
    run_dir = Path(flags.run_dir).absolute()
    if not (run_dir / FOLDER / "job.json").is_file():
        raise UsageError(f"{run_dir}: not a run directory made by `expkit submit`")
    spec = start_attempt(run_dir)
    run_argv = list(spec["argv"])
    if spec.get("registry"):
        registry = Registry.from_module(spec["registry"])
    if (run_dir / "checkpoints" / LAST).is_file():
        from expkit.engine.resume import resume_run

        return resume_run(run_dir, [], registry, prog)
    run_flags, rest = options(RunFlags, run_argv, prog, "", forward=True)
    parsed = parse_run(run_flags, rest, Context(registry, prog, spec.get("registry"), True))
    assert parsed is not None
    experiment_cls, args, sources = parsed
    from expkit.config.machine import load_machine_config
    from expkit.engine.runner import execute
    from expkit.utils.console import Console

    console = Console()
    experiment = experiment_cls(args, load_machine_config(announce=console.print), console)
    code: int = execute(experiment, argv=run_argv, sources=sources, run_dir=run_dir)
    return code


def cmd_sync(argv: list[str], ctx: Context) -> int:
    """`expkit sync RUN_DIR ...`: send finished, stopped or killed runs to the MLflow server of
    config.yaml (what it lacks of each); exit 1 when one could not be sent."""
    flags, _ = options(SyncCommand, argv, ctx.prog, f"{ctx.prog} sync RUN_DIR [RUN_DIR ...]")
    if flags is None:
        return 0
    from expkit.config.machine import load_machine_config
    from expkit.tracking.mlflow import sync_run

    ctx.work_started = True
    settings = load_machine_config(announce=print).mlflow
    return 0 if all([sync_run(Path(run), settings, print) for run in flags.run_dirs]) else 1
