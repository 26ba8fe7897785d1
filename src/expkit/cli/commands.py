"""The commands that run in this package's process: run, resume, reproduce, sweep, compare,
report, list, schema, completion, new. Each takes (argv, registry, prog) and returns an exit
code; each imports what it needs (pydantic, torch) only once it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from expkit.cli.options import (
    REGISTRY_MODULE,
    SUMMARIES,
    WORK_STARTED,
    check_choice,
    close_match,
    find_experiment_id,
    flag,
    flag_names,
    option,
    overview,
    results_dir_option,
    wants_help,
)
from expkit.config.registry import Registry
from expkit.errors import UsageError


def cmd_run(argv: list[str], registry: Registry, prog: str) -> int:
    """Train one experiment: validate the flags, then run it into a new run directory."""
    for i, token in enumerate(argv):  # the seed-style spelling of `resume RUN_DIR`
        if token == "--resume" or token.startswith("--resume="):
            WORK_STARTED[0] = True
            value = token.split("=", 1)[1] if "=" in token else (argv[i + 1:i + 2] or [""])[0]
            rest = argv[:i] + argv[i + (1 if "=" in token else 2):]
            rest = [t for t in rest if not t.startswith("--experiment_id")]
            return cmd_resume([value, *rest], registry, prog)
    if find_experiment_id(argv) is None and option(argv, "--config")[0] is None \
            and wants_help(argv):
        print(overview(registry, prog))  # the fast path: no pydantic, no torch
        return 0
    print_config, rest = flag(argv, "--print_config")
    parsed = parse_run(rest, registry, prog)
    if parsed is None:  # help was printed
        return 0
    experiment_cls, args, sources = parsed
    if print_config:
        from expkit.utils.mappings import config_yaml

        print(config_yaml(args.model_dump(mode="json"), sources), end="")
        return 0

    WORK_STARTED[0] = True
    from expkit.config.machine import load_machine_config  # after validation: bad flags write nothing
    from expkit.engine.runner import execute
    from expkit.utils.console import Console

    console = Console()
    machine = load_machine_config(announce=console.print)
    return execute(experiment_cls(args, machine, console), argv=argv, sources=sources)


def parse_run(argv: list[str], registry: Registry, prog: str
              ) -> tuple[type[Any], Any, dict[str, str]] | None:
    """A run's flags (and --config FILE) validated: the experiment class, its args and where each
    value came from; None when --help was asked for and printed. Bad flags raise UsageError."""
    from expkit.config.args import build_parser, parse_argv
    from expkit.utils.mappings import read_mapping

    config_file, rest = option(argv, "--config")
    base: dict[str, Any] = {}
    if config_file is not None:
        if not config_file:
            raise UsageError("--config: needs a file, e.g. --config run.yaml or RUN_DIR/config.json")
        base, _ = read_mapping(Path(config_file), "the experiment's arguments (--config)")
    exp_id = find_experiment_id(rest) or base.get("experiment_id")
    if exp_id is None:
        if wants_help(rest):
            print(overview(registry, prog))
            return None
        misspelled = [f"unknown flag --{name} (did you mean --{match}?)"
                      for name in flag_names(rest)
                      if (match := close_match(name, ["experiment_id", "config"]))]
        raise UsageError(*misspelled, "--experiment_id is required; choose one of: "
                         + ", ".join(registry.ids()), hint=f"see `{prog} --help`")
    experiment_cls = registry.load(str(exp_id))
    args_cls = experiment_cls.args_class
    if wants_help(rest):
        doc = (experiment_cls.__doc__ or "").strip()
        parser = build_parser(args_cls, f"{prog} --experiment_id={exp_id}", doc,
                              auto={"monitor": experiment_cls.default_monitor})
        parser.print_help()
        return None
    sources: dict[str, str] = {}
    args = parse_argv(args_cls, rest, prog, base=base, base_name=config_file or "", sources=sources)
    return experiment_cls, args, sources


def cmd_schema(argv: list[str], registry: Registry, prog: str) -> int:
    """Print the JSON Schema of an experiment's arguments (for editor completion of YAML configs)."""
    import json

    exp_id = find_experiment_id(argv)
    if not exp_id:
        raise UsageError("schema needs --experiment_id; choose one of: " + ", ".join(registry.ids()))
    args_cls = registry.load(exp_id).args_class
    schema = args_cls.model_json_schema()
    schema["title"] = f"expkit {exp_id} arguments"
    print(json.dumps(schema, indent=2))
    return 0


def cmd_list(argv: list[str], registry: Registry, prog: str) -> int:
    """Print a table of the runs in the results folder (filters: --experiment_id, --status)."""
    from expkit.rundir.dirs import STATUSES, list_runs, runs_table

    exp_id, rest = option(argv, "--experiment_id")
    status, rest = option(rest, "--status")
    check_choice("--status", status, STATUSES)
    folder, rest = results_dir_option(rest)
    if rest:
        raise UsageError(f"list: unexpected {' '.join(rest)!r}; use --experiment_id, --status, "
                         "--results_dir")
    known = {*registry.ids(), *(p.name for p in folder.iterdir() if p.is_dir() and p.name != "sweeps"
                                and p.name != "repeats")} if folder.is_dir() else set(registry.ids())
    check_choice("--experiment_id", exp_id, sorted(known))
    print(runs_table(list_runs(folder, exp_id, status)))
    return 0


def cmd_reproduce(argv: list[str], registry: Registry, prog: str) -> int:
    """Re-run a run's recorded config into a new run directory and compare the metrics."""
    if not argv or argv[0].startswith("-"):
        raise UsageError("reproduce needs a run directory: reproduce RUN_DIR [--tolerance=X]")
    tolerance, rest = option(argv[1:], "--tolerance")
    if rest:
        raise UsageError(f"reproduce: unexpected {' '.join(rest)!r}; only --tolerance=X")
    try:
        tol = float(tolerance) if tolerance is not None else 0.0
    except ValueError:
        raise UsageError(f"--tolerance: got {tolerance!r}; expected a number such as 1e-6") from None
    from expkit.engine.reproduce import reproduce_run

    return reproduce_run(Path(argv[0]), tol, registry, prog)


def cmd_completion(argv: list[str], registry: Registry, prog: str) -> int:
    """Print a bash or zsh completion script: commands, flags, experiment ids, choice values."""
    shell = argv[0] if argv else ""
    if shell not in ("bash", "zsh"):
        raise UsageError(f"completion: got {shell!r}; expected bash or zsh, e.g. "
                         f"`{prog} completion bash > ~/.local/share/bash-completion/completions/expkit`")
    from expkit.cli.completion import completion_script

    print(completion_script(registry, shell, list(SUMMARIES)))
    return 0


def cmd_sweep(argv: list[str], registry: Registry, prog: str) -> int:
    """Search hyperparameters with Optuna: each trial a normal run (see expkit.sweep.command)."""
    if wants_help(argv):
        from expkit.sweep.command import __doc__ as doc

        print(f"usage: {prog} sweep --experiment_id=ID --space FLAG=KIND:SPEC [...] [--trials N] "
              "[--direction max|min] [--sampler tpe|random|grid] [--pruner none|median] "
              "[--storage URL] [--workers K] [--name NAME] [--seed S] [--sweep FILE.yaml] "
              "[experiment flags]\n"
              f"       {prog} sweep --status NAME [--storage URL]\n\n"
              "KIND:SPEC is loguniform:LO:HI, uniform:LO:HI, int:LO:HI[:STEP], logint:LO:HI or "
              "choice:A,B,...\n" + (doc or ""))
        return 0
    from expkit.sweep.command import run_sweep

    return run_sweep(argv, registry, prog, REGISTRY_MODULE[0])


def cmd_compare(argv: list[str], registry: Registry, prog: str) -> int:
    """Compare runs: differing arguments, final/best/test metrics, and compare.png; runs of one
    setting (every argument but the seed, or --group_by flags) as mean ± std and 95% interval."""
    exp_id, rest = option(argv, "--experiment_id")
    last, rest = option(rest, "--last")
    out, rest = option(rest, "--out")
    group_by, rest = option(rest, "--group_by")
    fmt, rest = option(rest, "--format")
    results_dir, rest = results_dir_option(rest)
    unknown = [t for t in rest if t.startswith("-")]
    if unknown:
        raise UsageError(f"compare: unknown option {unknown[0]!r}; use RUN_DIR/glob ..., "
                         "--experiment_id=ID, --last=N, --out=FILE.png, --group_by=FLAG,..., "
                         "--format=text|markdown|latex|csv, --results_dir=DIR")
    if last is not None and (not last.isdigit() or int(last) < 1):
        raise UsageError(f"--last: got {last!r}; expected a whole number >= 1, e.g. --last 5")
    from expkit.reports.tables import FORMATS

    check_choice("--format", fmt, FORMATS)
    by = [name.strip().removeprefix("--") for name in group_by.split(",") if name.strip()] \
        if group_by is not None else None
    if by is not None and not by:
        raise UsageError("--group_by: needs flag names, e.g. --group_by=lr,batch_size")
    from expkit.reports.compare import compare_table, differing, plot_compare, select_runs
    from expkit.reports.tables import footnote, group_table, significance, summary_metrics
    from expkit.rundir.results import group_runs

    selected = select_runs(rest, results_dir, exp_id, int(last) if last else None)
    missing = object()
    for name in by or []:
        if all(run.get(name, missing) is missing for run in selected):
            raise UsageError(f"--group_by: no run has a flag --{name}")
    keys = differing(selected)
    groups = group_runs(selected, by)
    grouped = by is not None or any(len(g.runs) > 1 for g in groups)
    metrics = summary_metrics(selected)
    if fmt in (None, "text"):
        print(compare_table(selected, keys))
        if grouped:
            print(f"\n{group_table(groups, metrics)}\n{footnote()}")
            for line in significance(groups, metrics):
                print(line)
    else:  # the table alone on stdout, ready for a file: `... --format=latex > table.tex`
        print(group_table(groups, metrics, fmt))
    # under results/, never the working directory: a run in a clean clone leaves it clean
    path = plot_compare(selected, keys, Path(out) if out else results_dir / "compare.png",
                        groups if grouped else None)
    print(f"plot: {path}", file=sys.stdout if fmt in (None, "text") else sys.stderr)
    return 0


def cmd_repeat(argv: list[str], registry: Registry, prog: str) -> int:
    """Train one setting with several seeds, as one group: repeat --seeds=N [--workers=K] FLAGS."""
    usage = (f"{prog} repeat --seeds=N|S1,S2,... [--workers=K] [--name=GROUP] --experiment_id=ID "
             "[experiment flags]")
    seeds_text, rest = option(argv, "--seeds")
    workers_text, rest = option(rest, "--workers")
    name, rest = option(rest, "--name")
    if wants_help(rest) and find_experiment_id(rest) is None:
        from expkit.repeat.command import __doc__ as doc

        print(f"usage: {usage}\n\n{doc or ''}")
        return 0
    if seeds_text is None:
        raise UsageError("repeat needs --seeds: how many (--seeds=3) or which (--seeds=0,1,2)",
                         hint=f"usage: {usage}")
    if any(t == "--seed" or t.startswith("--seed=") for t in rest):
        raise UsageError("--seed: repeat gives each run its seed; list them with --seeds=0,1,2")
    if workers_text is not None and (not workers_text.isdigit() or not 1 <= int(workers_text) <= 64):
        raise UsageError(f"--workers: got {workers_text!r}; expected a whole number from 1 to 64")
    from expkit.repeat.command import parse_seeds, run_repeat

    wanted = parse_seeds(seeds_text)
    parsed = parse_run(rest, registry, prog)
    if parsed is None:  # --help of the experiment was printed
        return 0
    _, args, sources = parsed
    WORK_STARTED[0] = True
    return run_repeat(args, sources, rest, wanted, int(workers_text or 1), name, registry,
                      REGISTRY_MODULE[0], prog)


def cmd_report(argv: list[str], registry: Registry, prog: str) -> int:
    """Write a run's self-contained report.html, or results/index.html with --index."""
    index, rest = flag(argv, "--index")
    results_dir, rest = results_dir_option(rest)
    from expkit.reports.report import write_index, write_report

    if index:
        if rest:
            raise UsageError(f"report --index: unexpected {' '.join(rest)!r}")
        print(f"wrote {write_index(results_dir).absolute()}")
        return 0
    if len(rest) != 1 or rest[0].startswith("-"):
        raise UsageError("report needs one run directory: report RUN_DIR (or report --index)")
    print(f"wrote {write_report(Path(rest[0])).absolute()}")
    return 0


def cmd_resume(argv: list[str], registry: Registry, prog: str) -> int:
    """Continue a stopped or crashed run from its last checkpoint: resume RUN_DIR [--epochs=N]."""
    if not argv or not argv[0] or argv[0].startswith("-"):
        raise UsageError("resume needs a run directory: resume RUN_DIR [--epochs=N ...]")
    from expkit.engine.resume import resume_run

    return resume_run(Path(argv[0]), argv[1:], registry, prog)


def cmd_new(argv: list[str], registry: Registry, prog: str) -> int:
    """Write a new experiment from a template and register it (see expkit.cli.scaffold)."""
    template, argv = option(argv, "--template")
    module, argv = option(argv, "--registry")
    usage = f"{prog} new NAME [--template=classification|regression] [--registry MODULE]"
    if wants_help(argv):
        print(f"usage: {usage}")
        return 0
    from expkit.cli.templates import TEMPLATES

    check_choice("--template", template, TEMPLATES)
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError(f"new: got {' '.join(argv) or 'no NAME'}; usage: {usage}")
    from expkit.cli.scaffold import new_experiment
    from expkit.utils.invocation import command

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

