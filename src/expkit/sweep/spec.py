"""A sweep's specification: `expkit sweep` argv (or --sweep FILE.yaml) -> a validated SweepSpec,
checked against the experiment's flags before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field, ValidationError, field_validator

from expkit.config.args import Args, flag_table
from expkit.config.parsing import parse_argv, parse_options
from expkit.config.registry import Registry
from expkit.errors import UsageError
from expkit.rundir.dirs import safe_name
from expkit.slurm.jobs import SlurmFlags, slurm_given
from expkit.sweep.space import Space, grid_values, parse_space
from expkit.utils.suggest import closest

if TYPE_CHECKING:
    from expkit.engine.experiment import ExperimentArgs

class SweepSettings(Args):
    """How a sweep searches: what both the command line and a study's sweep.json hold."""

    name: str | None = Field(None, description="the study's name; auto = the experiment id")
    trials: int = Field(20, ge=1, description="how many finished (complete or pruned) trials in all")
    direction: Literal["max", "min"] | None = Field(
        None, description="maximize or minimize --monitor; auto = the experiment's --monitor_mode")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna sampler")
    pruner: Literal["none", "median"] = Field("none", description="stop bad trials early")
    storage: str | None = Field(None, description="Optuna storage URL; auto = SQLite at "
                                "results/sweeps/<name>/study.db")
    workers: int = Field(1, ge=1, description="worker processes (local), or worker jobs (SLURM)")
    launcher: Literal["local", "slurm"] = Field("local", description="where workers run: local "
                                                "processes, or SLURM batch jobs (--slurm_* flags)")
    seed: int | None = Field(None, ge=0, description="sampler seed (worker k uses seed + k; a "
                             "grid walks one fixed order) and every trial's training seed")

    @field_validator("direction", mode="before")
    @classmethod
    def _long_direction(cls, value: Any) -> Any:
        return {"maximize": "max", "minimize": "min"}.get(value, value)


class SweepSpec(SweepSettings):
    """A sweep: which experiment, how many trials, what to search, and where the study lives."""

    experiment_id: str = Field(description="the registered experiment every trial runs")
    space: dict[str, str] = Field(description="flag -> loguniform:LO:HI | uniform:LO:HI | "
                                  "int:LO:HI[:STEP] | logint:LO:HI | choice:A,B,...")
    args: list[str] = Field(default_factory=list, description="fixed flags for every trial")

    @property
    def study_name(self) -> str:
        """The study's name (also its folder under results/sweeps)."""
        return self.name or self.experiment_id


class SweepCommand(SweepSettings):
    """Search hyperparameters with Optuna: each trial a normal run, one study in SQLite or
    PostgreSQL; flags the sweep does not know are fixed flags of every trial."""

    experiment_id: str | None = Field(None, description="the registered experiment every trial runs")
    space: list[str] = Field(default_factory=list, json_schema_extra={"whole": True},
                             description="FLAG=KIND:SPEC, once per searched flag; KIND:SPEC is "
                             "loguniform:LO:HI, uniform:LO:HI, int:LO:HI[:STEP], logint:LO:HI or "
                             "choice:A,B,...")
    sweep: str | None = Field(None, description="a YAML file of these options (flags override it)")
    status: str | None = Field(None, description="show the named sweep's trials, best trial and "
                               "sweep.png, and exit")
    slurm: SlurmFlags = Field(default_factory=SlurmFlags)


@dataclass
class SweepCall:
    """`expkit sweep`'s command line, understood: the spec to run (None with --status), the
    study to show, the storage URL given, and the --slurm_* values."""

    spec: SweepSpec | None
    status: str | None
    storage: str | None
    slurm: dict[str, Any]


# ---- the command line --------------------------------------------------------------------


def parse_sweep_argv(argv: list[str]) -> SweepCall | None:
    """`expkit sweep ...` argv (and its --sweep FILE.yaml) understood; None when --help was
    asked for (the caller prints it). Raises UsageError listing every problem."""
    from expkit.utils.mappings import read_mapping

    sources: dict[str, str] = {}
    flags, fixed, wants_help = parse_options(SweepCommand, argv, forward=True, sources=sources)
    if wants_help:
        return None
    slurm = slurm_given(flags.slurm, sources)
    if slurm and flags.launcher != "slurm":
        raise UsageError(f"--slurm_{next(iter(slurm))}: --slurm_* flags go with --launcher=slurm")
    spaces: dict[str, str] = {}
    for text in flags.space:
        flag, sep, spec = text.partition("=")
        if not sep or not flag:
            raise UsageError(f"--space {text}: expected FLAG=KIND:SPEC, e.g. "
                             "--space lr=loguniform:1e-4:1e-2")
        spaces[flag.lstrip("-")] = spec
    base: dict[str, Any] = read_mapping(Path(flags.sweep), "a sweep (--sweep)")[0] \
        if flags.sweep else {}
    given = {name: getattr(flags, name) for name in (*SweepSettings.model_fields, "experiment_id")
             if sources.get(name) == "cli"}
    merged = {**base, **given, "space": {**(base.get("space") or {}), **spaces},
              "args": [*(base.get("args") or []), *fixed]}
    if flags.status is not None:
        return SweepCall(None, flags.status, merged.get("storage"), slurm)
    try:
        return SweepCall(SweepSpec.model_validate(merged), None, None, slurm)
    except ValidationError as e:
        from expkit.config.parsing import describe_validation_error

        raise UsageError(*describe_validation_error(e, None, where="sweep ")) from None


def prepare(spec: SweepSpec, registry: Registry, prog: str) -> tuple[dict[str, Space], Any]:
    """Check the space and the fixed flags against the experiment; (spaces, experiment class)."""
    if safe_name(spec.study_name) != spec.study_name:
        raise UsageError(f"--name: got {spec.study_name!r}; use letters, digits, '-', '_', '.' "
                         "(it names a folder)")
    if not spec.space:
        raise UsageError("sweep needs at least one --space FLAG=KIND:SPEC, e.g. "
                         "--space lr=loguniform:1e-4:1e-2")
    experiment_cls = registry.load(spec.experiment_id)
    args_cls = experiment_cls.args_class
    table = flag_table(args_cls)
    spaces = {}
    for flag, text in spec.space.items():
        if flag not in table:

            near = closest(flag, table)
            raise UsageError(f"--space {flag}=...: {spec.experiment_id} has no flag --{flag}"
                             + (f"; did you mean --{near}?" if near else ""))
        spaces[flag] = parse_space(flag, text)
    for flag in spaces:
        if any(t == f"--{flag}" or t.startswith(f"--{flag}=") for t in spec.args):
            raise UsageError(f"--{flag}: both fixed and in --space; give it once")
    samples = [spaces[f].choices if spaces[f].kind == "choice" else [spaces[f].low, spaces[f].high]
               for f in spaces]
    for flag, values in zip(spaces, samples, strict=True):  # every bound/choice must be a valid flag
        for value in values:
            if spaces[flag].kind in ("int", "logint") and value is not None:
                value = int(value)
            try:
                parse_argv(args_cls, [f"--experiment_id={spec.experiment_id}", *spec.args,
                                      f"--{flag}={value}"], prog)
            except UsageError as e:
                if not any(f"--{flag}" in line for line in e.lines):
                    raise  # a fixed flag is wrong
                raise UsageError(*(f"--space {flag}={spec.space[flag]}: {line}" for line in e.lines),
                                 hint=e.hint) from None
    from expkit.engine.experiment import resolve_monitor  # imports torch: only once a sweep starts

    args = cast("ExperimentArgs", parse_argv(
        args_cls, [f"--experiment_id={spec.experiment_id}", *spec.args], prog))
    resolve_monitor(experiment_cls, args)
    mode = args.monitor_mode
    if spec.direction is not None and spec.direction != mode:
        raise UsageError(f"--direction {spec.direction}: but --monitor {args.monitor} has "
                         f"--monitor_mode={mode}; drop --direction (it follows --monitor), or "
                         "monitor another metric")
    spec.direction = spec.direction or mode  # optimize what runs monitor
    if spec.sampler == "grid":
        for space in spaces.values():
            grid_values(space)
    return spaces, experiment_cls
