"""The command line: argv -> one command. `run` is the default command, so the seed's
`python run.py --experiment_id=mnist --use_cuda=false --hidden_sizes="[64]"` works verbatim.

No torch import at module level: `--help` and argument errors answer fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from expkit.args import build_parser, parse_argv
from expkit.errors import ExpkitError, UsageError
from expkit.registry import Registry

Command = Callable[[list[str], Registry, str], int]


def _find_experiment_id(argv: list[str]) -> str | None:
    for i, token in enumerate(argv):
        if token.startswith("--experiment_id="):
            return token.split("=", 1)[1]
        if token == "--experiment_id":
            return argv[i + 1] if i + 1 < len(argv) else ""
    return None


def _wants_help(argv: list[str]) -> bool:
    return any(token in ("-h", "--help") for token in argv)


def overview(registry: Registry, prog: str) -> str:
    """The top-level help: usage, the commands, and each registered experiment in one line."""
    lines = [f"usage: {prog} [run] --experiment_id=ID [--flag=value ...]",
             f"       {prog} --experiment_id=ID --help    that experiment's arguments", ""]
    lines += ["commands:", *(f"  {name:<12}{doc}" for name, (_, doc) in COMMANDS.items()), ""]
    lines.append("experiments:")
    width = max((len(i) for i in registry.ids()), default=0) + 2
    lines += [f"  {exp_id:<{width}}{registry.describe(exp_id)}" for exp_id in registry.ids()]
    return "\n".join(lines)


def cmd_run(argv: list[str], registry: Registry, prog: str) -> int:
    """Train one experiment: validate the flags, then run it into a new run directory."""
    for i, token in enumerate(argv):  # the seed-style spelling of `resume RUN_DIR`
        if token == "--resume" or token.startswith("--resume="):
            value = token.split("=", 1)[1] if "=" in token else (argv[i + 1:i + 2] or [""])[0]
            rest = argv[:i] + argv[i + (1 if "=" in token else 2):]
            rest = [t for t in rest if not t.startswith("--experiment_id")]
            return cmd_resume([value, *rest], registry, prog)
    exp_id = _find_experiment_id(argv)
    if exp_id is None:
        if _wants_help(argv):
            print(overview(registry, prog))
            return 0
        raise UsageError("--experiment_id is required; choose one of: " + ", ".join(registry.ids()),
                         hint=f"see `{prog} --help`")
    experiment_cls = registry.load(exp_id)
    args_cls = experiment_cls.args_class
    if _wants_help(argv):
        doc = (experiment_cls.__doc__ or "").strip()
        parser = build_parser(args_cls, f"{prog} --experiment_id={exp_id}", doc)
        parser.print_help()
        return 0
    args = parse_argv(args_cls, argv, prog)

    from expkit.config import load_machine_config  # after validation: bad flags write nothing
    from expkit.console import Console

    console = Console()
    machine = load_machine_config(announce=console.print)
    code: int = experiment_cls(args, machine, console).run(argv)
    return code


def cmd_resume(argv: list[str], registry: Registry, prog: str) -> int:
    """Continue a stopped or crashed run from its last checkpoint: resume RUN_DIR [--epochs=N]."""
    if not argv or not argv[0] or argv[0].startswith("-"):
        raise UsageError("resume needs a run directory: resume RUN_DIR [--epochs=N ...]")
    from expkit.resume import resume_run

    return resume_run(Path(argv[0]), argv[1:], registry, prog)


COMMANDS: dict[str, tuple[Command, str]] = {
    "run": (cmd_run, "train an experiment (the default command)"),
    "resume": (cmd_resume, "continue a run from checkpoints/last.pt: resume RUN_DIR [--epochs=N]"),
}


def main(argv: list[str] | None = None, *, registry: str | None = None,
         prog: str | None = None) -> int:
    """Entry point of `expkit`, `python -m expkit` and run.py; returns the exit code.

    `registry` names a module with an EXPERIMENTS dict (run.py passes "lab.registry");
    without it, every registry installed under the `expkit.registries` entry point is used.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0]) or "expkit"
    if prog == "__main__.py":
        prog = "python -m expkit"
    try:
        reg = Registry.from_module(registry) if registry else Registry.from_entry_points()
        name = argv[0] if argv and not argv[0].startswith("-") else "run"
        if name not in COMMANDS:
            raise UsageError(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
        rest = argv[1:] if argv and argv[0] == name else argv
        return COMMANDS[name][0](rest, reg, prog)
    except ExpkitError as e:
        for line in e.lines:
            print(f"{prog}: error: {line}", file=sys.stderr)
        if e.hint:
            print(f"{prog}: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
