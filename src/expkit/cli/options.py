"""What every command shares: argv helpers (`--name=value`, switches, --help), the state
`main` sets for a command (its registry module; whether work started), and the overview
that `--help` prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from expkit.config.registry import Registry
from expkit.errors import UsageError

Command = Callable[[list[str], Registry, str], int]


REGISTRY_MODULE: list[str | None] = [None]  # the module main() was given, for sweep worker processes


# False while a command has only parsed and printed (help, --print_config, a usage error):
# run_cli() may then skip the interpreter's teardown, which costs ~0.5 s once torch is imported.
WORK_STARTED: list[bool] = [False]


def find_experiment_id(argv: list[str]) -> str | None:
    return option(argv, "--experiment_id")[0]


def option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of `--name=v` / `--name v` (None if absent) and argv without it."""
    for i, token in enumerate(argv):
        if token.startswith(name + "="):
            return token.split("=", 1)[1], argv[:i] + argv[i + 1:]
        if token == name:
            return (argv[i + 1] if i + 1 < len(argv) else ""), argv[:i] + argv[i + 2:]
    return None, argv


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def flag(argv: list[str], name: str) -> tuple[bool, list[str]]:
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


def flag_names(argv: list[str]) -> list[str]:
    """The names of the flags in argv (`--lr=3` and `--lr 3` are both "lr")."""
    return [t[2:].split("=", 1)[0] for t in argv if t.startswith("--") and len(t) > 2]


def close_match(word: str, options: Iterable[str]) -> str | None:
    """The option closest to a misspelled `word` (None when none is close)."""
    import difflib

    found = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return found[0] if found else None


def check_choice(name: str, value: str | None, choices: Iterable[str]) -> None:
    """A UsageError naming the valid values when option `name` got one that is not among them
    (None: the option was not given)."""
    allowed = list(choices)
    if value is None or value in allowed:
        return
    match = close_match(value, allowed)
    raise UsageError(f"{name}: got {value!r}{f' (did you mean {match!r}?)' if match else ''}; "
                     f"choose one of: {', '.join(allowed)}")


def wants_help(argv: list[str]) -> bool:
    return any(token in ("-h", "--help") for token in argv)


def results_dir_option(argv: list[str]) -> tuple[Path, list[str]]:
    """--results_dir from argv, else the machine config's (without writing a config.yaml)."""
    results, rest = option(argv, "--results_dir")
    if results:
        return Path(results), rest
    from expkit.config.machine import load_machine_config

    return load_machine_config(announce=lambda _: None).results_dir, rest



#: one line per command, for `--help` and the completion script (main.COMMANDS runs them)
SUMMARIES: dict[str, str] = {
    "run": "train an experiment (the default command); --config FILE, --print_config",
    "resume": "continue a run from checkpoints/last.pt: resume RUN_DIR [--epochs=N]",
    "reproduce": "re-run a run's config and compare: reproduce RUN_DIR [--tolerance=X]",
    "sweep": "Optuna search: sweep --experiment_id=ID --space lr=loguniform:1e-4:1e-2 "
                         "--trials N [--workers K]",
    "repeat": "one setting over several seeds, as a group: repeat --seeds=N [--workers=K] "
              "--experiment_id=ID FLAGS",
    "compare": "runs side by side + RESULTS/compare.png: compare RUN_DIR ... | "
                             "--experiment_id=ID --last N [--out FILE.png]",
    "report": "self-contained report.html: report RUN_DIR | report --index",
    "submit": "run as a SLURM batch job: submit [--slurm_partition=P --slurm_time=T ...] RUN FLAGS",
    "job": "inside a SLURM job: start or resume its run: job RUN_DIR",
    "sync": "send runs to the MLflow server of config.yaml: sync RUN_DIR ...",
    "list": "table of runs: list [--experiment_id=ID] [--status=finished|...]",
    "schema": "JSON Schema of an experiment's arguments: schema --experiment_id=ID",
    "completion": "shell completion script: completion bash|zsh",
    "new": "write and register a new experiment: new NAME "
                     "[--template=classification|regression]",
}


def overview(registry: Registry, prog: str) -> str:
    """The top-level help: usage, the commands, and each registered experiment in one line."""
    lines = [f"usage: {prog} [run] --experiment_id=ID [--flag=value ...]",
             f"       {prog} --experiment_id=ID --help    that experiment's arguments",
             f"       {prog} --version                    expkit's version", ""]
    lines += ["commands:", *(f"  {name:<12}{doc}" for name, doc in SUMMARIES.items()), ""]
    lines.append("experiments:")
    width = max((len(i) for i in registry.ids()), default=0) + 2
    lines += [f"  {exp_id:<{width}}{registry.describe(exp_id)}" for exp_id in registry.ids()]
    return "\n".join(lines)
