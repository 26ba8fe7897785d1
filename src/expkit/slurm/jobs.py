"""SLURM batch jobs: `expkit submit` writes a job script into a new run directory and hands it
to sbatch; the job runs `expkit job RUN_DIR`, which starts the run there or, after a requeue,
resumes it from its checkpoint.

Plain sbatch/scontrol, not submitit: the job script is a file a researcher can read and
submit by hand, nothing is pickled, and expkit's status comes from run.json (no `sacct`, so
no accounting database is needed).

Time limits and preemption. The script asks for SIGUSR1 `signal_seconds` before the time
limit (`--signal=B:USR1@S`, to the script itself); on it, the script sends SIGTERM to the
run, which finishes its step, saves a checkpoint (mid-epoch too) and exits; the script then
marks run.json `requeued` and requeues the job (`scontrol requeue`). An admin's `scontrol
requeue` or a preemption sends SIGTERM to the job's processes: the same checkpoint, and
SLURM requeues the job. Each start of the job appends an attempt to run.json; the restarted
job resumes the run in the same directory, bit-identical to an uninterrupted run on CPU.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, create_model

from expkit.config.args import Args
from expkit.config.machine import SlurmSettings
from expkit.errors import ExpkitError, UsageError
from expkit.rundir.dirs import RunRecord, now


def _slurm_fields() -> dict[str, Any]:
    """One `--slurm_<name>` flag per SlurmSettings field: None = config.yaml's value."""
    fields: dict[str, Any] = {}
    for name, field in SlurmSettings.model_fields.items():
        if name == "sbatch":
            fields["slurm_sbatch"] = (list[str], Field(
                default_factory=list, description=f"{field.description} (repeat the flag)",
                json_schema_extra={"whole": True}))
        else:
            fields[f"slurm_{name}"] = (str | None, Field(
                None, description=f"{field.description}; auto = config.yaml's slurm.{name}"))
    return fields


#: the --slurm_* flags of `submit` and `sweep --launcher=slurm`, as a part of their options
SlurmFlags: type[Args] = create_model(
    "SlurmFlags", __base__=Args, __doc__="SLURM job settings over config.yaml's `slurm:`",
    **_slurm_fields())


def slurm_given(flags: BaseModel, sources: dict[str, str]) -> dict[str, Any]:
    """The --slurm_* values the command line gave (SlurmSettings field -> value; None, from
    `--slurm_partition=none`, drops config.yaml's value), for settings_with. `sources` is
    what parse_options filled: where each value came from."""
    return {name.removeprefix("slurm_"): value for name, value in flags.model_dump().items()
            if sources.get(f"slurm.{name}") == "cli"}


FOLDER = "slurm"  # in the run directory: job.sh, job.json, job-<id>.out/.err


def settings_with(defaults: SlurmSettings, given: dict[str, Any]) -> SlurmSettings:
    """config.yaml's `slurm:` section with the command line's --slurm_* flags over it."""
    from pydantic import ValidationError

    values = {**defaults.model_dump(), **given,
              "sbatch": [*defaults.sbatch, *given.get("sbatch", [])]}
    try:
        return SlurmSettings.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        raise UsageError(f"--slurm_{err['loc'][0]}: got {err['input']!r}: {err['msg']}") from None


def ranks_per_node(settings: SlurmSettings) -> int:
    """Processes per node: --slurm_ranks_per_node, else one per GPU, else one."""
    return settings.ranks_per_node or settings.gpus_per_node or 1


def job_script(folder: Path, settings: SlurmSettings, launch: list[str], workdir: Path,
               name: str, run_dir: Path | None = None, stem: str = "job") -> str:
    """The batch script: #SBATCH lines, then the run under a trap that turns the time-limit
    signal into checkpoint + requeue. `launch` is what python (or torchrun) runs; its output
    goes to FOLDER/STEM-<job id>.out/.err; `run_dir`'s run.json is marked when it requeues."""
    lines = [f"--job-name={name}", f"--output={folder}/{stem}-%j.out", f"--error={folder}/{stem}-%j.err",
             "--open-mode=append", "--requeue", f"--signal=B:USR1@{settings.signal_seconds}",
             f"--nodes={settings.nodes}", f"--ntasks-per-node={1}"]
    ranks = ranks_per_node(settings)
    for option, value in (("--partition", settings.partition), ("--time", settings.time),
                          ("--mem", settings.mem), ("--account", settings.account),
                          ("--qos", settings.qos)):
        if value is not None:
            lines.append(f"{option}={value}")
    cpus = settings.cpus_per_task or (ranks if ranks > 1 else None)
    if cpus:
        lines.append(f"--cpus-per-task={cpus}")
    if settings.gpus_per_node:
        lines.append(f"--gpus-per-node={settings.gpus_per_node}")
    lines += settings.sbatch
    distributed = ranks > 1 or settings.nodes > 1
    python = shlex.quote(sys.executable)
    if distributed:  # one torchrun per node; rendezvous at the first node of the allocation
        runner = (f'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
                  f"{'srun --kill-on-bad-exit=1 ' if settings.nodes > 1 else ''}"
                  f"{python} -m torch.distributed.run --nnodes={settings.nodes} "
                  f"--nproc-per-node={ranks} --rdzv-backend=c10d "
                  f'--rdzv-endpoint="$head:29500" --rdzv-id="$SLURM_JOB_ID" '
                  f"{' '.join(shlex.quote(a) for a in launch)} &")
    else:
        runner = f"{python} {' '.join(shlex.quote(a) for a in launch)} &"
    sbatch = "\n".join(f"#SBATCH {line}" for line in lines)
    mark = (f"  {python} -m expkit.slurm requeued {shlex.quote(str(run_dir))}\n" if run_dir else "")
    return f"""#!/bin/bash
{sbatch}
# Written by expkit; submit it again by hand with: sbatch {folder / (stem + '.sh')}
# SIGUSR1 (the time limit is near): the run checkpoints, then the job requeues itself.
# SIGTERM (scancel, an admin's requeue, preemption): the run checkpoints and stops.
cd {shlex.quote(str(workdir))}
export PYTHONUNBUFFERED=1
requeue=0
trap 'requeue=1; kill -TERM "$child" 2>/dev/null' USR1
trap 'kill -TERM "$child" 2>/dev/null' TERM
{runner}
child=$!
while :; do
  wait "$child"; code=$?
  kill -0 "$child" 2>/dev/null || break  # wait returned for a signal; the run is still saving
done
if [ "$requeue" = 1 ] && [ "$code" != 0 ]; then
{mark}  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$code"
"""


def submit(run_dir: Path, argv: list[str], settings: SlurmSettings, launch: list[str],
           experiment_id: str, registry_module: str | None) -> str:
    """Write RUN_DIR/slurm/job.sh and job.json, sbatch it; records the job in run.json and
    returns the job id. `registry_module`: run.py's registry (None: the installed ones)."""
    folder = run_dir / FOLDER
    folder.mkdir(exist_ok=True)
    script = folder / "job.sh"
    script.write_text(job_script(folder, settings, launch, Path.cwd(), f"expkit-{experiment_id}",
                                 run_dir))
    (folder / "job.json").write_text(json.dumps(
        {"argv": argv, "registry": registry_module, "slurm": settings.model_dump()}, indent=2) + "\n")
    job = sbatch(script)
    RunRecord(run_dir).update(experiment_id=experiment_id, status="queued", argv=argv,
                              started=None, ended=None,
                              slurm={"job_id": job, "script": str(script), "submitted": now(),
                                     "attempts": []})
    return job


def sbatch(script: Path) -> str:
    """Submit a job script; its job id."""
    if shutil.which("sbatch") is None:
        raise ExpkitError("submitting SLURM jobs needs sbatch on the PATH (submit from a login node)")
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise ExpkitError(f"sbatch refused the job: {done.stderr.strip() or done.stdout.strip()} "
                          f"(script: {script})")
    return done.stdout.strip().split(";")[0]


def start_attempt(run_dir: Path) -> dict[str, Any]:
    """Inside the job: note this start in run.json (job id, restart count, node) and return the
    saved job spec (the run's command line, its registry)."""
    spec = json.loads((run_dir / FOLDER / "job.json").read_text())
    if os.environ.get("RANK", "0") == "0":
        record = RunRecord(run_dir)
        slurm = dict(record.read().get("slurm") or {})
        attempt = {"job_id": os.environ.get("SLURM_JOB_ID"),
                   "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                   "node": os.environ.get("SLURMD_NODENAME"), "at": now()}
        slurm["attempts"] = [*slurm.get("attempts", []), attempt]
        record.update(slurm=slurm)
    return dict(spec)



def main(argv: list[str]) -> int:
    """`python -m expkit.slurm requeued RUN_DIR`: the job script marks a run it requeues."""
    if len(argv) != 2 or argv[0] != "requeued":
        print("usage: python -m expkit.slurm requeued RUN_DIR", file=sys.stderr)
        return 2
    RunRecord(Path(argv[1])).update(status="requeued")
    return 0

