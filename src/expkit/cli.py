"""The command line: argv -> one command. `run` is the default command, so the seed's
`python run.py --experiment_id=mnist --use_cuda=false --hidden_sizes="[64]"` works verbatim.

No torch import at module level: `--help` and argument errors answer fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from expkit.errors import ExpkitError, UsageError, report
from expkit.registry import Registry

# pydantic, yaml and torch are imported inside the commands that need them, so that
# `--help` (the experiment list) and completion scripts answer in a fraction of a second.

Command = Callable[[list[str], Registry, str], int]
REGISTRY_MODULE: list[str | None] = [None]  # the module main() was given, for sweep worker processes
# False while a command has only parsed and printed (help, --print_config, a usage error):
# run_cli() may then skip the interpreter's teardown, which costs ~0.5 s once torch is imported.
WORK_STARTED: list[bool] = [False]


def _find_experiment_id(argv: list[str]) -> str | None:
    return _option(argv, "--experiment_id")[0]


def _option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of `--name=v` / `--name v` (None if absent) and argv without it."""
    for i, token in enumerate(argv):
        if token.startswith(name + "="):
            return token.split("=", 1)[1], argv[:i] + argv[i + 1:]
        if token == name:
            return (argv[i + 1] if i + 1 < len(argv) else ""), argv[:i] + argv[i + 2:]
    return None, argv


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _flag(argv: list[str], name: str) -> tuple[bool, list[str]]:
    """Whether a switch `--name` is on (bare, `--name=true` or `--name true`), and argv without it.

    A bare `--name` takes the next token only when it is a boolean word, so that
    `--print_config --lr 3e-5` leaves `--lr 3e-5` intact.
    """
    for i, token in enumerate(argv):
        if token.startswith(name + "="):
            word = token.split("=", 1)[1].lower()
            if word not in _BOOL_WORDS and word != "":
                raise UsageError(f"{name}: got {token.split('=', 1)[1]!r}; expected true or false")
            return _BOOL_WORDS.get(word, True), argv[:i] + argv[i + 1:]
        if token == name:
            following = argv[i + 1].lower() if i + 1 < len(argv) else None
            if following in _BOOL_WORDS:
                return _BOOL_WORDS[following], argv[:i] + argv[i + 2:]
            return True, argv[:i] + argv[i + 1:]
    return False, argv


def _wants_help(argv: list[str]) -> bool:
    return any(token in ("-h", "--help") for token in argv)


def overview(registry: Registry, prog: str) -> str:
    """The top-level help: usage, the commands, and each registered experiment in one line."""
    lines = [f"usage: {prog} [run] --experiment_id=ID [--flag=value ...]",
             f"       {prog} --experiment_id=ID --help    that experiment's arguments",
             f"       {prog} --version                    expkit's version", ""]
    lines += ["commands:", *(f"  {name:<12}{doc}" for name, (_, doc) in COMMANDS.items()), ""]
    lines.append("experiments:")
    width = max((len(i) for i in registry.ids()), default=0) + 2
    lines += [f"  {exp_id:<{width}}{registry.describe(exp_id)}" for exp_id in registry.ids()]
    return "\n".join(lines)


def cmd_run(argv: list[str], registry: Registry, prog: str) -> int:
    """Train one experiment: validate the flags, then run it into a new run directory."""
    for i, token in enumerate(argv):  # the seed-style spelling of `resume RUN_DIR`
        if token == "--resume" or token.startswith("--resume="):
            WORK_STARTED[0] = True
            value = token.split("=", 1)[1] if "=" in token else (argv[i + 1:i + 2] or [""])[0]
            rest = argv[:i] + argv[i + (1 if "=" in token else 2):]
            rest = [t for t in rest if not t.startswith("--experiment_id")]
            return cmd_resume([value, *rest], registry, prog)
    if _find_experiment_id(argv) is None and _option(argv, "--config")[0] is None \
            and _wants_help(argv):
        print(overview(registry, prog))  # the fast path: no pydantic, no torch
        return 0
    print_config, rest = _flag(argv, "--print_config")
    parsed = parse_run(rest, registry, prog)
    if parsed is None:  # help was printed
        return 0
    experiment_cls, args, sources = parsed
    if print_config:
        from expkit.mappings import config_yaml

        print(config_yaml(args.model_dump(mode="json"), sources), end="")
        return 0

    WORK_STARTED[0] = True
    from expkit.config import load_machine_config  # after validation: bad flags write nothing
    from expkit.console import Console

    console = Console()
    machine = load_machine_config(announce=console.print)
    code: int = experiment_cls(args, machine, console).run(argv, sources)
    return code


def parse_run(argv: list[str], registry: Registry, prog: str
              ) -> tuple[type[Any], Any, dict[str, str]] | None:
    """A run's flags (and --config FILE) validated: the experiment class, its args and where each
    value came from; None when --help was asked for and printed. Bad flags raise UsageError."""
    from expkit.args import build_parser, parse_argv
    from expkit.mappings import read_mapping

    config_file, rest = _option(argv, "--config")
    base: dict[str, Any] = {}
    if config_file is not None:
        if not config_file:
            raise UsageError("--config: needs a file, e.g. --config run.yaml or RUN_DIR/config.json")
        base, _ = read_mapping(Path(config_file), "the experiment's arguments (--config)")
    exp_id = _find_experiment_id(rest) or base.get("experiment_id")
    if exp_id is None:
        if _wants_help(rest):
            print(overview(registry, prog))
            return None
        raise UsageError("--experiment_id is required; choose one of: " + ", ".join(registry.ids()),
                         hint=f"see `{prog} --help`")
    experiment_cls = registry.load(str(exp_id))
    args_cls = experiment_cls.args_class
    if _wants_help(rest):
        doc = (experiment_cls.__doc__ or "").strip()
        parser = build_parser(args_cls, f"{prog} --experiment_id={exp_id}", doc)
        parser.print_help()
        return None
    sources: dict[str, str] = {}
    args = parse_argv(args_cls, rest, prog, base=base, base_name=config_file or "", sources=sources)
    return experiment_cls, args, sources


def cmd_schema(argv: list[str], registry: Registry, prog: str) -> int:
    """Print the JSON Schema of an experiment's arguments (for editor completion of YAML configs)."""
    import json

    exp_id = _find_experiment_id(argv)
    if not exp_id:
        raise UsageError("schema needs --experiment_id; choose one of: " + ", ".join(registry.ids()))
    args_cls = registry.load(exp_id).args_class
    schema = args_cls.model_json_schema()
    schema["title"] = f"expkit {exp_id} arguments"
    print(json.dumps(schema, indent=2))
    return 0


def cmd_list(argv: list[str], registry: Registry, prog: str) -> int:
    """Print a table of the runs in the results folder (filters: --experiment_id, --status)."""
    from expkit.rundirs import list_runs, runs_table

    exp_id, rest = _option(argv, "--experiment_id")
    status, rest = _option(rest, "--status")
    folder, rest = _results_dir(rest)
    if rest:
        raise UsageError(f"list: unexpected {' '.join(rest)!r}; use --experiment_id, --status, "
                         "--results_dir")
    print(runs_table(list_runs(folder, exp_id, status)))
    return 0


def cmd_reproduce(argv: list[str], registry: Registry, prog: str) -> int:
    """Re-run a run's recorded config into a new run directory and compare the metrics."""
    if not argv or argv[0].startswith("-"):
        raise UsageError("reproduce needs a run directory: reproduce RUN_DIR [--tolerance=X]")
    tolerance, rest = _option(argv[1:], "--tolerance")
    if rest:
        raise UsageError(f"reproduce: unexpected {' '.join(rest)!r}; only --tolerance=X")
    try:
        tol = float(tolerance) if tolerance is not None else 0.0
    except ValueError:
        raise UsageError(f"--tolerance: got {tolerance!r}; expected a number such as 1e-6") from None
    from expkit.reproduce import reproduce_run

    return reproduce_run(Path(argv[0]), tol, registry, prog)


def cmd_completion(argv: list[str], registry: Registry, prog: str) -> int:
    """Print a bash or zsh completion script: commands, flags, experiment ids, choice values."""
    shell = argv[0] if argv else ""
    if shell not in ("bash", "zsh"):
        raise UsageError(f"completion: got {shell!r}; expected bash or zsh, e.g. "
                         f"`{prog} completion bash > ~/.local/share/bash-completion/completions/expkit`")
    from expkit.completion import completion_script

    print(completion_script(registry, shell, list(COMMANDS)))
    return 0


def cmd_sweep(argv: list[str], registry: Registry, prog: str) -> int:
    """Search hyperparameters with Optuna: each trial a normal run (see expkit.sweep)."""
    if _wants_help(argv):
        from expkit.sweep import __doc__ as doc

        print(f"usage: {prog} sweep --experiment_id=ID --space FLAG=KIND:SPEC [...] [--trials N] "
              "[--direction max|min] [--sampler tpe|random|grid] [--pruner none|median] "
              "[--storage URL] [--workers K] [--name NAME] [--seed S] [--sweep FILE.yaml] "
              "[experiment flags]\n"
              f"       {prog} sweep --status NAME [--storage URL]\n\n"
              "KIND:SPEC is loguniform:LO:HI, uniform:LO:HI, int:LO:HI[:STEP], logint:LO:HI or "
              "choice:A,B,...\n" + (doc or ""))
        return 0
    from expkit.sweep import run_sweep

    return run_sweep(argv, registry, prog, REGISTRY_MODULE[0])


def _results_dir(argv: list[str]) -> tuple[Path, list[str]]:
    """--results_dir from argv, else the machine config's (without writing a config.yaml)."""
    results, rest = _option(argv, "--results_dir")
    if results:
        return Path(results), rest
    from expkit.config import load_machine_config

    return load_machine_config(announce=lambda _: None).results_dir, rest


def cmd_compare(argv: list[str], registry: Registry, prog: str) -> int:
    """Compare runs: differing arguments, final/best/test metrics, and compare.png."""
    exp_id, rest = _option(argv, "--experiment_id")
    last, rest = _option(rest, "--last")
    out, rest = _option(rest, "--out")
    results_dir, rest = _results_dir(rest)
    unknown = [t for t in rest if t.startswith("-")]
    if unknown:
        raise UsageError(f"compare: unknown option {unknown[0]!r}; use RUN_DIR/glob ..., "
                         "--experiment_id=ID, --last=N, --out=FILE.png, --results_dir=DIR")
    if last is not None and (not last.isdigit() or int(last) < 1):
        raise UsageError(f"--last: got {last!r}; expected a whole number >= 1, e.g. --last 5")
    from expkit.compare import compare_table, differing, plot_compare, select_runs

    selected = select_runs(rest, results_dir, exp_id, int(last) if last else None)
    keys = differing(selected)
    print(compare_table(selected, keys))
    # under results/, never the working directory: a run in a clean clone leaves it clean
    path = plot_compare(selected, keys, Path(out) if out else results_dir / "compare.png")
    print(f"plot: {path}")
    return 0


def cmd_report(argv: list[str], registry: Registry, prog: str) -> int:
    """Write a run's self-contained report.html, or results/index.html with --index."""
    index, rest = _flag(argv, "--index")
    results_dir, rest = _results_dir(rest)
    from expkit.report import write_index, write_report

    if index:
        if rest:
            raise UsageError(f"report --index: unexpected {' '.join(rest)!r}")
        print(f"wrote {write_index(results_dir)}")
        return 0
    if len(rest) != 1 or rest[0].startswith("-"):
        raise UsageError("report needs one run directory: report RUN_DIR (or report --index)")
    print(f"wrote {write_report(Path(rest[0]))}")
    return 0


def _lazy(module: str, name: str) -> Command:
    """A command implemented in `module`, imported only when the command runs."""
    def run(argv: list[str], registry: Registry, prog: str) -> int:
        import importlib

        code: int = getattr(importlib.import_module(module), name)(argv, registry, prog)
        return code
    return run


def cmd_resume(argv: list[str], registry: Registry, prog: str) -> int:
    """Continue a stopped or crashed run from its last checkpoint: resume RUN_DIR [--epochs=N]."""
    if not argv or not argv[0] or argv[0].startswith("-"):
        raise UsageError("resume needs a run directory: resume RUN_DIR [--epochs=N ...]")
    from expkit.resume import resume_run

    return resume_run(Path(argv[0]), argv[1:], registry, prog)


def cmd_new(argv: list[str], registry: Registry, prog: str) -> int:
    """Write a new experiment from a template and register it (see expkit.scaffold)."""
    template, argv = _option(argv, "--template")
    module, argv = _option(argv, "--registry")
    usage = f"{prog} new NAME [--template=classification|regression] [--registry MODULE]"
    if _wants_help(argv):
        print(f"usage: {usage}")
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError(f"new: got {' '.join(argv) or 'no NAME'}; usage: {usage}")
    from expkit.invocation import command
    from expkit.scaffold import new_experiment

    module = module or REGISTRY_MODULE[0] or _only_registry()
    path = new_experiment(argv[0], template or "classification", module, registry.ids())
    print(f"wrote {path} and registered '{argv[0]}' in {module}; train it with: "
          f"{command('--experiment_id=' + argv[0], '--epochs=1')}")
    return 0


def _only_registry() -> str:
    """The module of the one installed registry (`new` needs to know which to add to)."""
    modules: list[str] = [ep.value.partition(":")[0] for ep in Registry.installed()]
    if len(modules) != 1:
        raise UsageError(f"new: {len(modules)} registries are installed ({', '.join(modules)}); "
                         "say which with --registry MODULE")
    return modules[0]


COMMANDS: dict[str, tuple[Command, str]] = {
    "run": (cmd_run, "train an experiment (the default command); --config FILE, --print_config"),
    "resume": (cmd_resume, "continue a run from checkpoints/last.pt: resume RUN_DIR [--epochs=N]"),
    "reproduce": (cmd_reproduce, "re-run a run's config and compare: reproduce RUN_DIR [--tolerance=X]"),
    "sweep": (cmd_sweep, "Optuna search: sweep --experiment_id=ID --space lr=loguniform:1e-4:1e-2 "
                         "--trials N [--workers K]"),
    "compare": (cmd_compare, "runs side by side + RESULTS/compare.png: compare RUN_DIR ... | "
                             "--experiment_id=ID --last N [--out FILE.png]"),
    "report": (cmd_report, "self-contained report.html: report RUN_DIR | report --index"),
    "submit": (_lazy("expkit.slurm", "submit_command"),
               "run as a SLURM batch job: submit [--slurm_partition=P --slurm_time=T ...] RUN FLAGS"),
    "job": (_lazy("expkit.slurm", "job_command"),
            "inside a SLURM job: start or resume its run: job RUN_DIR"),
    "sync": (_lazy("expkit.tracking.mlflow", "sync_command"),
             "send runs to the MLflow server of config.yaml: sync RUN_DIR ..."),
    "list": (cmd_list, "table of runs: list [--experiment_id=ID] [--status=finished|...]"),
    "schema": (cmd_schema, "JSON Schema of an experiment's arguments: schema --experiment_id=ID"),
    "completion": (cmd_completion, "shell completion script: completion bash|zsh"),
    "new": (cmd_new, "write and register a new experiment: new NAME "
                     "[--template=classification|regression]"),
}


def main(argv: list[str] | None = None, *, registry: str | None = None,
         prog: str | None = None) -> int:
    """Entry point of `expkit`, `python -m expkit` and run.py; returns the exit code.

    `registry` names a module with an EXPERIMENTS dict (run.py passes "lab.registry");
    without it, every registry installed under the `expkit.registries` entry point is used.
    """
    # a bare "--" ends torchrun's options (`torchrun ... run.py -- --monitor=val_f1`): a no-op here
    argv = [token for token in (sys.argv[1:] if argv is None else argv) if token != "--"]
    prog = prog or os.path.basename(sys.argv[0]) or "expkit"
    if prog == "__main__.py":
        prog = "python -m expkit"
    REGISTRY_MODULE[0] = registry
    WORK_STARTED[0] = False
    from expkit.invocation import remember

    remember(prog)
    try:
        reg = Registry.from_module(registry) if registry else Registry.from_entry_points()
        if argv[:1] == ["--version"]:
            from expkit import version

            print(f"expkit {version()}")
            return 0
        name = argv[0] if argv and not argv[0].startswith("-") else "run"
        if name not in COMMANDS:
            raise UsageError(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
        rest = argv[1:] if argv and argv[0] == name else argv
        WORK_STARTED[0] = name != "run"  # `run` says so itself once its flags are valid
        return COMMANDS[name][0](rest, reg, prog)
    except KeyboardInterrupt as e:
        return report(e, prog)
    except Exception as e:  # a bug: one line (the traceback with EXPKIT_DEBUG=1), never a dump
        if os.environ.get("EXPKIT_DEBUG") and not isinstance(e, ExpkitError):
            raise
        return report(e, prog, os.environ.get("RANK", "0"))


def run_cli(registry: str | None = None) -> NoReturn:
    """The process entry point (`expkit`, `python -m expkit`, run.py): main(), then exit.

    When the command only parsed and printed (help, --print_config, a usage error), nothing
    is open and no thread runs: the exit skips the interpreter's teardown of torch's thousands
    of modules (~0.5 s here), after atexit handlers and a flush of stdout/stderr.
    """
    code = main(registry=registry)
    if WORK_STARTED[0]:
        sys.exit(code)
    import atexit
    import contextlib

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`--help | head`)
            stream.flush()
    os._exit(code)
