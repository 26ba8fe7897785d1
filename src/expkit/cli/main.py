"""The command line: argv -> one command. `run` is the default command, so the seed's
`python run.py --experiment_id=mnist --use_cuda=false --hidden_sizes="[64]"` works verbatim.

No torch import at module level: `--help` and argument errors answer fast.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from expkit.cli import cluster
from expkit.cli import commands as c
from expkit.cli.options import SUMMARIES, Command, Context
from expkit.config.registry import Registry
from expkit.errors import ExpkitError, UsageError, report

#: the commands, by name; options.SUMMARIES has each one's line of help, in this order
COMMANDS: dict[str, Command] = {
    "run": c.cmd_run,
    "resume": c.cmd_resume,
    "reproduce": c.cmd_reproduce,
    "sweep": c.cmd_sweep,
    "repeat": c.cmd_repeat,
    "lr-find": c.cmd_lr_find,
    "compare": c.cmd_compare,
    "report": c.cmd_report,
    "export": c.cmd_export,
    "submit": cluster.cmd_submit,
    "job": cluster.cmd_job,
    "sync": cluster.cmd_sync,
    "list": c.cmd_list,
    "schema": c.cmd_schema,
    "completion": c.cmd_completion,
    "new": c.cmd_new,
}
assert list(COMMANDS) == list(SUMMARIES)


def main(argv: list[str] | None = None, *, registry: str | None = None,
         prog: str | None = None) -> int:
    """Entry point of `expkit`, `python -m expkit` and run.py; returns the exit code.

    `registry` names a module with an EXPERIMENTS dict (run.py passes "lab.registry");
    without it, every registry installed under the `expkit.registries` entry point is used.
    """
    return _main(argv, registry, prog)[0]


def _main(argv: list[str] | None, registry: str | None, prog: str | None
          ) -> tuple[int, Context | None]:
    """main(), and the command's Context (None when no command started): run_cli asks it
    whether work started."""
    # a bare "--" ends torchrun's options (`torchrun ... run.py -- --monitor=val_f1`): a no-op here
    argv = [token for token in (sys.argv[1:] if argv is None else argv) if token != "--"]
    prog = prog or os.path.basename(sys.argv[0]) or "expkit"
    if prog == "__main__.py":
        prog = "python -m expkit"
    from expkit.utils.invocation import remember

    remember(prog)
    ctx = None
    try:
        reg = Registry.from_module(registry) if registry else Registry.from_entry_points()
        if argv[:1] == ["--version"]:
            from expkit.utils.version import version

            print(f"expkit {version()}")
            return 0, ctx
        name = argv[0] if argv and not argv[0].startswith("-") else "run"
        if name not in COMMANDS:
            raise UsageError(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
        rest = argv[1:] if argv and argv[0] == name else argv
        # only `run` says when work started (its flags valid): the others may have begun at once
        ctx = Context(reg, prog, registry, work_started=name != "run")
        return COMMANDS[name](rest, ctx), ctx
    except KeyboardInterrupt as e:
        return report(e, prog), ctx
    except BrokenPipeError:  # the reader left early (`expkit --help | head -1`): normal, not a bug
        _quiet_stdout()
        return 0, ctx
    except Exception as e:  # a bug: one line (the traceback with EXPKIT_DEBUG=1), never a dump
        if os.environ.get("EXPKIT_DEBUG") and not isinstance(e, ExpkitError):
            raise
        return report(e, prog, os.environ.get("RANK", "0")), ctx


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not meet the closed pipe again."""
    import contextlib

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run_cli(registry: str | None = None) -> NoReturn:
    """The process entry point (`expkit`, `python -m expkit`, run.py): main(), then exit.

    When the command only parsed and printed (help, --print_config, a usage error), nothing
    is open and no thread runs: the exit skips the interpreter's teardown of torch's thousands
    of modules (~0.5 s here), after atexit handlers and a flush of stdout/stderr.
    """
    code, ctx = _main(None, registry, None)
    if ctx is not None and ctx.work_started:
        try:
            sys.stdout.flush()
        except BrokenPipeError:  # `expkit list | head -1`
            _quiet_stdout()
        sys.exit(code)
    import atexit
    import contextlib

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`--help | head`)
            stream.flush()
    os._exit(code)

