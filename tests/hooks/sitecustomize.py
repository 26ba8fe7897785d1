"""Test-only process hooks, on PYTHONPATH for the crash and stop tests: a deterministic moment
to kill or signal a run, chosen by the test instead of a timer racing the machine's load.

EXPKIT_TEST_AT says when and what, counted from this process's start (several moments:
separated by commas):
  step:N:SIG      after the N-th optimizer step
  write:NAME:K:SIG  inside the K-th atomic write of the file NAME (last.pt, history.csv, ...):
                    the temp file is complete and fsynced-to-be, the rename has not happened
SIG is KILL, INT or TERM (the process signals itself), or ENOSPC or EDQUOT (that write's
fsync fails with this error, as on a full disk or quota); with EXPKIT_TEST_RANK=R only
torchrun's rank R does it. Inside a SLURM job (first attempt only) SIG may also be
SLURM_USR1 (`scancel --signal=USR1 --batch`: the time-limit warning, to the job script) or
SLURM_REQUEUE (`scontrol requeue`, as an admin would): the process then waits until SLURM's
SIGTERM has reached it, so the run stops at this very step; EXPKIT_TEST_JOB_NAME=NAME limits
these to the job of that name.
EXPKIT_TEST_EVENTS=FILE appends each event to
FILE, so a test can see a reference run's order of events and pick moments from it.
Events are named as in EXPKIT_TEST_AT without the count: "step", "write:last.pt".

EXPKIT_TEST_WRITES=FILE appends every change this process makes under its working directory:
a file opened for writing, a folder made, a file renamed into place or removed (Python's
audit events; expkit's atomic writes, torch.save into them and numpy go through these);
`{rank}` in FILE is replaced by the process's RANK.
"""

import errno
import importlib.abc
import importlib.util
import os
import re
import signal
import sys
import types

_ONLY_RANK = os.environ.get("EXPKIT_TEST_RANK")  # under torchrun: only this rank signals itself
_AT = {moment.rsplit(":", 1)[0]: moment.rsplit(":", 1)[1]  # "step:5" -> "KILL"
       for moment in os.environ.get("EXPKIT_TEST_AT", "").split(",") if moment
       if _ONLY_RANK in (None, os.environ.get("RANK"))}
_EVENTS = os.environ.get("EXPKIT_TEST_EVENTS")
_TMP = re.compile(r"^\.(.+)\.[^.]+\.tmp$")  # expkit.utils.files.atomic_write's temp names
_counts: dict[str, int] = {}
_fsync = os.fsync


def _event(name: str) -> None:
    _counts[name] = _counts.get(name, 0) + 1
    if _EVENTS:
        with open(_EVENTS, "a") as f:
            f.write(name + "\n")
    what = _AT.get(f"{name}:{_counts[name]}")
    if what in ("ENOSPC", "EDQUOT"):
        code = getattr(errno, what)
        raise OSError(code, os.strerror(code))
    if what in ("SLURM_USR1", "SLURM_REQUEUE"):
        _slurm(what)
    elif what:
        os.kill(os.getpid(), getattr(signal, "SIG" + what))


def _slurm(what: str) -> None:
    import subprocess
    import time

    if os.environ.get("SLURM_RESTART_COUNT", "0") != "0":  # the requeued attempt runs on
        return
    if os.environ.get("EXPKIT_TEST_JOB_NAME", os.environ.get("SLURM_JOB_NAME")) != \
            os.environ.get("SLURM_JOB_NAME"):  # only in the job of this name
        return
    job = os.environ["SLURM_JOB_ID"]
    got: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        got.append(signum)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    command = (["scancel", "--signal=USR1", "--batch", job] if what == "SLURM_USR1"
               else ["scontrol", "requeue", job])
    subprocess.run(command, check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    signal.signal(signal.SIGTERM, previous)


def _on_step(*_: object) -> None:
    _event("step")


class _StepHook(importlib.abc.MetaPathFinder):
    """Counts optimizer steps from the moment torch.optim.optimizer is imported (on every rank,
    whether or not it writes anything)."""

    def find_spec(self, name: str, path: object, target: object = None) -> object:
        if name != "torch.optim.optimizer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        run_module = spec.loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            run_module(module)
            module.register_optimizer_step_post_hook(_on_step)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if any(moment.startswith("step:") for moment in _AT) or _EVENTS:
    if "torch.optim.optimizer" in sys.modules:  # loaded into a process forked after the import
        sys.modules["torch.optim.optimizer"].register_optimizer_step_post_hook(_on_step)
    else:
        sys.meta_path.insert(0, _StepHook())


def _hooked_fsync(fd: int) -> None:
    match = _TMP.match(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
    if match:
        _event(f"write:{match.group(1)}")
    _fsync(fd)


os.fsync = _hooked_fsync


_WRITES = os.environ.get("EXPKIT_TEST_WRITES", "").replace("{rank}", os.environ.get("RANK", "0"))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_cwd = os.getcwd()
_log_fd: list[int] = []


_CHANGES = {"os.mkdir": 0, "os.rename": 1, "os.remove": 0, "os.rmdir": 0, "os.symlink": 1}


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _log_fd == [-1]:
        return
    if event == "open":
        path, mode, flags = args
        if not (any(c in mode for c in "wax+") if isinstance(mode, str)
                else isinstance(flags, int) and bool(flags & _WRITE_FLAGS)):
            return
    elif event in _CHANGES:  # a folder made, a file renamed into place or removed
        path = args[_CHANGES[event]]
    else:
        return
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(path))
    if not path.startswith(_cwd + os.sep) or path == _WRITES:
        return
    if not _log_fd:
        _log_fd.append(-1)  # the log's own open is not logged
        _log_fd[0] = os.open(_WRITES, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log_fd[0], f"{event} {path}\n".encode())


if _WRITES:
    sys.addaudithook(_audit)
