"""A single-node SLURM cluster started from nothing for the tests (Debian's slurmctld, slurmd,
munge; no accounting: expkit's job status comes from its own run.json, never from sacct).

Everything lives in one temp folder: munge's key and socket, slurm.conf, state, spool, logs;
its own ports. `start()` waits until the node is idle; `stop()` cancels every job, waits for
the queue to empty, shuts the daemons down and kills what is left of their process groups.
Measured here: start to idle ~1 s, submit to running ~1 s, a requeued job waits ~10 s (the
credential's expiry; SLURM's default is ~2 min). Do not start a requeued job sooner with
`scontrol update starttime=now`: within the expiry SLURM kills it ("Job credential revoked")
and the job ends instead of restarting.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged")


def slurm_installed() -> bool:
    """Whether the daemons and the client commands are here (`.ci/run` installs them)."""
    return all(Path(d).is_file() for d in DAEMONS) and shutil.which("sbatch") is not None


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """One controller, one node (`hostname -s`, 2 CPUs), one partition `debug`."""

    def __init__(self, cpus: int = 2) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="expkit-slurm-"))
        self.folder.chmod(0o755)
        self.cpus = cpus
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.folder / "slurm.conf")}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        """A SLURM command (sbatch, squeue, scontrol, ...) against this cluster; its stdout."""
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def _daemon(self, *cmd: str) -> None:
        log = (self.folder / f"{Path(cmd[0]).name}.out").open("ab")
        with log:
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def start(self) -> Cluster:
        f = self.folder
        munge = f / "munge"
        munge.mkdir(mode=0o755)
        subprocess.run(["/usr/sbin/mungekey", "-c", "-f", "-k", str(munge / "munge.key")],
                       check=True, capture_output=True)
        sock = munge / "munge.socket"
        self._daemon("/usr/sbin/munged", "-F", "--force", f"--key-file={munge / 'munge.key'}",
                     f"--socket={sock}", f"--pid-file={munge / 'munged.pid'}",
                     f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}")
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        ctld, slurmd = _free_ports(2)
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool"):
            (f / sub).mkdir()
        (f / "slurm.conf").write_text(f"""\
ClusterName=expkit
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock},cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=2,bf_interval=1
MpiDefault=none
ReturnToService=2
JobRequeue=1
SlurmctldPort={ctld}
SlurmdPort={slurmd}
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd.pid'}
SlurmctldLogFile={f / 'slurmctld.log'}
SlurmdLogFile={f / 'slurmd.log'}
NodeName={host} CPUs={self.cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        self._daemon("/usr/sbin/slurmctld", "-D", "-i")
        self._daemon("/usr/sbin/slurmd", "-D")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            if "idle" in self.run("sinfo", "-h", "-o", "%T", check=False):
                return self
            time.sleep(0.2)
        logs = "".join((f / name).read_text()[-1500:] for name in ("slurmctld.log", "slurmd.log")
                       if (f / name).exists())
        self.stop()
        raise RuntimeError(f"the SLURM cluster did not start:\n{logs}")

    def state(self, job: str) -> str | None:
        """A job's state as squeue shows it (PENDING, RUNNING, ...), "" once it left the queue,
        None when squeue did not answer (a busy controller): not a reason to think it gone."""
        done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env=self.env,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            return "" if "Invalid job id" in done.stderr else None
        return done.stdout.strip()

    def wait_gone(self, *jobs: str, timeout: float = 300) -> None:
        """Until none of `jobs` is queued or running (a requeued one is back in the queue)."""
        deadline, absent = time.monotonic() + timeout, 0
        while absent < 3:  # three answers in a row: a job between two states can be missing once
            absent = absent + 1 if all(self.state(j) == "" for j in jobs) else 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {jobs} still in the queue: "
                                   f"{self.run('squeue', check=False)}")
            time.sleep(0.5)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "-u", os.environ.get("USER", "root"), check=False)
            with contextlib.suppress(TimeoutError):
                self.wait_gone(*self.run("squeue", "-h", "-o", "%i", check=False).split(), timeout=30)
            self.run("scontrol", "shutdown", check=False, timeout=20)
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)
