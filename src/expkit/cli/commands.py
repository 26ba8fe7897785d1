"""The commands that run in this package's process: run, resume, reproduce, sweep, compare,
report, list, schema, completion, new. Each takes (argv, Context) and returns an exit code;
each declares its options as an Args model (cli/flags.py) and imports what it needs (torch)
only once it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from expkit.cli.options import (
    SUMMARIES,
    Context,
    check_choice,
    close_match,
    flag_names,
    overview,
    results_folder,
)
from expkit.errors import ExpkitError, UsageError


def cmd_run(argv: list[str], ctx: Context) -> int:
    """Train one experiment: validate the flags, then run it into a new run directory."""
    from expkit.cli.flags import RunCommand
    from expkit.config.parsing import parse_options

    flags, rest, _ = parse_options(RunCommand, argv, forward=True)  # parse_run answers --help
    if flags.resume is not None:  # the seed-style spelling of `resume RUN_DIR`
        ctx.work_started = True
        return cmd_resume([flags.resume, *rest], ctx)
    parsed = parse_run(flags, rest, ctx)
    if parsed is None:  # help was printed
        return 0
    experiment_cls, args, sources = parsed
    if flags.print_config:
        from expkit.utils.mappings import config_yaml

        print(config_yaml(args.model_dump(mode="json"), sources), end="")
        return 0

    ctx.work_started = True
    from expkit.config.machine import load_machine_config  # after validation: bad flags write nothing
    from expkit.engine.runner import execute
    from expkit.utils.console import Console

    console = Console()
    machine = load_machine_config(announce=console.print)
    return execute(experiment_cls(args, machine, console), argv=argv, sources=sources)


def parse_run(flags: Any, rest: list[str], ctx: Context
              ) -> tuple[type[Any], Any, dict[str, str]] | None:
    """A run's flags validated: `flags` (a RunFlags: --experiment_id, --config FILE) and the
    experiment's own flags in `rest`. The experiment class, its args and where each value came
    from; None when --help was asked for and printed. Bad flags raise UsageError."""
    from expkit.config.args import build_parser
    from expkit.config.parsing import parse_argv
    from expkit.utils.mappings import read_mapping

    base: dict[str, Any] = {}
    if flags.config is not None:
        if not flags.config:
            raise UsageError("--config: needs a file, e.g. --config run.yaml or RUN_DIR/config.json")
        base, _ = read_mapping(Path(flags.config), "the experiment's arguments (--config)")
    exp_id = flags.experiment_id or base.get("experiment_id")
    wants_help = any(token in ("-h", "--help") for token in rest)
    if exp_id is None:
        if wants_help:
            print(overview(ctx.registry, ctx.prog))
            return None
        misspelled = [f"unknown flag --{name} (did you mean --{match}?)"
                      for name in flag_names(rest)
                      if (match := close_match(name, ["experiment_id", "config"]))]
        raise UsageError(*misspelled, "--experiment_id is required; choose one of: "
                         + ", ".join(ctx.registry.ids()), hint=f"see `{ctx.prog} --help`")
    experiment_cls = ctx.registry.load(str(exp_id))
    args_cls = experiment_cls.args_class
    if wants_help:
        doc = (experiment_cls.__doc__ or "").strip()
        parser = build_parser(args_cls, f"{ctx.prog} --experiment_id={exp_id}", doc,
                              auto={"monitor": experiment_cls.default_monitor})
        parser.print_help()
        return None
    sources: dict[str, str] = {}
    given_id = [f"--experiment_id={flags.experiment_id}"] if flags.experiment_id else []
    args = parse_argv(args_cls, [*given_id, *rest], ctx.prog, base=base,
                      base_name=flags.config or "", sources=sources)
    return experiment_cls, args, sources


def cmd_schema(argv: list[str], ctx: Context) -> int:
    """Print the JSON Schema of an experiment's arguments (for editor completion of YAML configs)."""
    import json

    from expkit.cli.flags import SchemaCommand, options

    flags, _ = options(SchemaCommand, argv, ctx.prog, f"{ctx.prog} schema --experiment_id=ID")
    if flags is None:
        return 0
    args_cls = ctx.registry.load(flags.experiment_id).args_class
    schema = args_cls.model_json_schema()
    schema["title"] = f"expkit {flags.experiment_id} arguments"
    print(json.dumps(schema, indent=2))
    return 0


def cmd_list(argv: list[str], ctx: Context) -> int:
    """Print a table of the runs in the results folder (filters: --experiment_id, --status)."""
    from expkit.cli.flags import ListCommand, options
    from expkit.rundir.dirs import STATUSES
    from expkit.rundir.listing import list_runs, runs_table

    flags, _ = options(ListCommand, argv, ctx.prog, f"{ctx.prog} list [--experiment_id=ID] "
                       "[--status=STATUS] [--results_dir=DIR]")
    if flags is None:
        return 0
    check_choice("--status", flags.status, STATUSES)
    folder = results_folder(flags.results_dir)
    known = {*ctx.registry.ids(), *(p.name for p in folder.iterdir() if p.is_dir()
                                    and p.name not in ("sweeps", "repeats"))} \
        if folder.is_dir() else set(ctx.registry.ids())
    check_choice("--experiment_id", flags.experiment_id, sorted(known))
    print(runs_table(list_runs(folder, flags.experiment_id, flags.status)))
    return 0


def cmd_reproduce(argv: list[str], ctx: Context) -> int:
    """Re-run a run's recorded config into a new run directory and compare the metrics."""
    from expkit.cli.flags import ReproduceCommand, options

    flags, _ = options(ReproduceCommand, argv, ctx.prog,
                       f"{ctx.prog} reproduce RUN_DIR [--tolerance=X]")
    if flags is None:
        return 0
    from expkit.engine.reproduce import reproduce_run

    return reproduce_run(Path(flags.run_dir), flags.tolerance, ctx.registry, ctx.prog)


def cmd_export(argv: list[str], ctx: Context) -> int:
    """Write a run's model as a folder to hand on (weights, config, dataset state, model card)."""
    from expkit.cli.flags import ExportCommand, options

    flags, _ = options(ExportCommand, argv, ctx.prog, f"{ctx.prog} export RUN_DIR "
                       "[--weights=best|last|ema|swa] [--format=safetensors,pt2,onnx] [--out=DIR]")
    if flags is None:
        return 0
    ctx.work_started = True
    from expkit.engine.export import export_run

    export_run(Path(flags.run_dir), flags.weights, flags.format,
               Path(flags.out) if flags.out else None, ctx.registry)
    return 0


def cmd_completion(argv: list[str], ctx: Context) -> int:
    """Print a bash or zsh completion script: commands, flags, experiment ids, choice values."""
    from expkit.cli.flags import CompletionCommand, options

    flags, _ = options(CompletionCommand, argv, ctx.prog, f"{ctx.prog} completion bash|zsh "
                       "(e.g. > ~/.local/share/bash-completion/completions/expkit)")
    if flags is None:
        return 0
    from expkit.cli.completion import completion_script

    print(completion_script(ctx.registry, flags.shell, list(SUMMARIES)))
    return 0


def cmd_sweep(argv: list[str], ctx: Context) -> int:
    """Search hyperparameters with Optuna: each trial a normal run (see expkit.sweep.command)."""
    from expkit.sweep.command import run_sweep

    return run_sweep(argv, ctx.registry, ctx.prog, ctx.module)


def cmd_compare(argv: list[str], ctx: Context) -> int:
    """Compare runs: differing arguments, final/best/test metrics, and compare.png; runs of one
    setting (every argument but the seed, or --group_by flags) as mean ± std and 95% interval."""
    from expkit.cli.flags import CompareCommand, options
    from expkit.reports.tables import FORMATS

    flags, _ = options(CompareCommand, argv, ctx.prog, f"{ctx.prog} compare RUN_DIR|GLOB ... | "
                       "--experiment_id=ID [--last=N] [--group_by=FLAG,...] [--format=FORMAT]")
    if flags is None:
        return 0
    check_choice("--format", flags.format, FORMATS)
    by = [name.strip().removeprefix("--") for name in flags.group_by if name.strip()] \
        if flags.group_by is not None else None
    if by is not None and not by:
        raise UsageError("--group_by: needs flag names, e.g. --group_by=lr,batch_size")
    from expkit.reports.compare import plot_compare, print_comparison, select_runs
    from expkit.rundir.groups import group_runs
    from expkit.rundir.summaries import CACHE_DIR

    results_dir = results_folder(flags.results_dir)
    selected = select_runs(flags.runs, results_dir, flags.experiment_id, flags.last)
    missing = object()
    for name in by or []:
        if all(run.get(name, missing) is missing for run in selected):
            raise UsageError(f"--group_by: no run has a flag --{name}")
    groups = group_runs(selected, by)
    grouped = by is not None or any(len(g.runs) > 1 for g in groups)
    keys = print_comparison(selected, groups, grouped, flags.format)
    # under results/, never the working directory: a run in a clean clone leaves it clean
    out = Path(flags.out) if flags.out else results_dir / "compare.png"
    path, left_out = plot_compare(selected, keys, out, groups if grouped else None,
                                  memo=results_dir / CACHE_DIR / "plots.json")
    print(f"plot: {path}" + (f" ({left_out})" if left_out else ""),
          file=sys.stdout if flags.format in (None, "text") else sys.stderr)
    return 0


def _experiment_command(model: type[Any], argv: list[str], ctx: Context, usage: str, doc: str | None,
                        check: Callable[[Any, list[str]], None] | None = None
                        ) -> tuple[Any, list[str], tuple[type[Any], Any, dict[str, str]]] | None:
    """A command's own options (`model`), then the experiment's flags after them: (its
    options, the experiment's flags, parse_run's answer); None when a --help was printed."""
    from expkit.cli.flags import options

    flags, rest = options(model, argv, ctx.prog, usage, forward=True, epilog=doc or "")
    if flags is None:
        return None
    if check is not None:
        check(flags, rest)
    parsed = parse_run(flags, rest, ctx)
    return None if parsed is None else (flags, rest, parsed)


def cmd_repeat(argv: list[str], ctx: Context) -> int:
    """Train one setting with several seeds, as one group: repeat --seeds=N [--workers=K] FLAGS."""
    from expkit.cli.flags import RepeatCommand
    from expkit.repeat.command import __doc__ as doc

    def no_seed(flags: Any, rest: list[str]) -> None:
        if any(t == "--seed" or t.startswith("--seed=") for t in rest):
            raise UsageError("--seed: repeat gives each run its seed; list them with --seeds=0,1,2")

    given = _experiment_command(RepeatCommand, argv, ctx, f"{ctx.prog} repeat --seeds=N|S1,S2,... "
                                "[--workers=K] [--name=GROUP] --experiment_id=ID [experiment flags]",
                                doc, no_seed)
    if given is None:  # a --help was printed
        return 0
    from expkit.repeat.command import parse_seeds, run_repeat

    flags, rest, (_, args, sources) = given
    ctx.work_started = True
    run_argv = [*([f"--experiment_id={flags.experiment_id}"] if flags.experiment_id else []),
                *([f"--config={flags.config}"] if flags.config else []), *rest]
    return run_repeat(args, sources, run_argv, parse_seeds(flags.seeds), flags.workers,
                      flags.name, ctx.registry, ctx.module, ctx.prog)


def cmd_lr_find(argv: list[str], ctx: Context) -> int:
    """Smith's learning-rate range test: lr-find --experiment_id=ID [--steps=N] FLAGS."""
    from expkit.cli.flags import LrFindCommand
    from expkit.engine.lrfind import RULE
    from expkit.engine.lrfind import __doc__ as doc

    def ordered(flags: Any, rest: list[str]) -> None:
        if flags.lr_min >= flags.lr_max:
            raise UsageError(f"--lr_min={flags.lr_min:g} must be below --lr_max={flags.lr_max:g}")

    given = _experiment_command(LrFindCommand, argv, ctx, f"{ctx.prog} lr-find --experiment_id=ID "
                                "[--lr_min=1e-7] [--lr_max=10] [--steps=100] [experiment flags]",
                                doc, ordered)
    if given is None:  # a --help was printed
        return 0
    flags, _, (experiment_cls, args, _) = given
    ctx.work_started = True
    from expkit.config.machine import load_machine_config
    from expkit.engine.lrfind import lr_find
    from expkit.utils.console import Console

    console = Console()
    machine = load_machine_config(announce=console.print)
    found = lr_find(experiment_cls(args, machine, console), flags.lr_min, flags.lr_max, flags.steps,
                    machine.results_dir)
    print(f"range test: {len(found.lrs)} steps, lr {found.lrs[0]:.3g} to {found.lrs[-1]:.3g}; "
          f"{found.stopped}")
    if found.suggestion is None:
        raise ExpkitError("lr-find: the loss was never finite; check the model and the data")
    print(f"suggested lr: {found.suggestion:.3g} ({RULE})")
    print(f"plot: {found.folder / 'lr_find.png'}  (the curve: {found.folder / 'lr_find.csv'})")
    return 0


def cmd_report(argv: list[str], ctx: Context) -> int:
    """Write a run's self-contained report.html, or results/index.html with --index."""
    from expkit.cli.flags import ReportCommand, options

    flags, _ = options(ReportCommand, argv, ctx.prog, f"{ctx.prog} report RUN_DIR | "
                       f"{ctx.prog} report --index [--results_dir=DIR]")
    if flags is None:
        return 0
    from expkit.reports.index import write_index
    from expkit.reports.report import write_report

    if flags.index:
        if flags.run_dir is not None:
            raise UsageError(f"report --index: unexpected {flags.run_dir!r}; the index covers "
                             "every run (--results_dir=DIR for another folder)")
        print(f"wrote {write_index(results_folder(flags.results_dir)).absolute()}")
        return 0
    if flags.run_dir is None:
        raise UsageError("report needs one run directory: report RUN_DIR (or report --index)")
    print(f"wrote {write_report(Path(flags.run_dir)).absolute()}")
    return 0


def cmd_resume(argv: list[str], ctx: Context) -> int:
    """Continue a stopped or crashed run from its last checkpoint: resume RUN_DIR [--epochs=N]."""
    from expkit.cli.flags import ResumeCommand, options

    flags, rest = options(ResumeCommand, argv, ctx.prog,
                          f"{ctx.prog} resume RUN_DIR [--epochs=N ...]", forward=True)
    if flags is None:
        return 0
    if not flags.run_dir:
        raise UsageError("resume needs a run directory: resume RUN_DIR [--epochs=N ...]")
    ctx.work_started = True
    from expkit.engine.resume import resume_run

    return resume_run(Path(flags.run_dir), rest, ctx.registry, ctx.prog)


def cmd_new(argv: list[str], ctx: Context) -> int:
    """Write a new experiment from a template and register it (see expkit.cli.scaffold)."""
    from expkit.cli.flags import NewCommand, options

    flags, _ = options(NewCommand, argv, ctx.prog, f"{ctx.prog} new NAME "
                       "[--template=classification|regression] [--registry=MODULE]")
    if flags is None:
        return 0
    from expkit.cli.scaffold import new_experiment
    from expkit.utils.invocation import command

    module = flags.registry or ctx.module or _only_registry()
    path = new_experiment(flags.name, flags.template, module, ctx.registry.ids())
    print(f"wrote {path} and registered '{flags.name}' in {module}; train it with: "
          f"{command('--experiment_id=' + flags.name, '--epochs=1')}")
    return 0


def _only_registry() -> str:
    """The module of the one installed registry (`new` needs to know which to add to)."""
    from expkit.config.registry import Registry

    modules: list[str] = [ep.value.partition(":")[0] for ep in Registry.installed()]
    if len(modules) != 1:
        raise UsageError(f"new: {len(modules)} registries are installed ({', '.join(modules)}); "
                         "say which with --registry MODULE")
    return modules[0]
