"""The options of expkit's own commands, declared as `Args` models as an experiment declares
its arguments: parsed by the same tokenizer and validator (`expkit.config.parsing`), with the
same error lines, and `--help` written from the field descriptions.

A field marked `json_schema_extra={"positional": True}` is the command's operand (RUN_DIR).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from expkit.config.args import Args, command_help
from expkit.config.parsing import parse_options
from expkit.slurm.jobs import SlurmFlags

OPERAND: dict[str, Any] = {"positional": True}


def operand(description: str, default: Any = ...) -> Any:
    """A command's positional argument (`resume RUN_DIR`), declared like any other field."""
    return Field(default, description=description, json_schema_extra=OPERAND)


class RunFlags(Args):
    """What every command that starts runs reads before the experiment's own flags."""

    experiment_id: str | None = Field(None, description="the registered experiment to run")
    config: str | None = Field(None, description="a YAML or JSON file of the experiment's "
                               "arguments (RUN_DIR/config.json works); flags override it")


class RunCommand(RunFlags):
    """Train one experiment (the default command)."""

    print_config: bool = Field(False, description="print the validated arguments as YAML, with "
                               "where each value came from, and exit")
    resume: str | None = Field(None, description="the seed's spelling of `resume RUN_DIR`")


class ResumeCommand(Args):
    """Continue a stopped or crashed run from its last checkpoint, in its own directory."""

    run_dir: str = operand("the run directory (results/<experiment_id>/<time>-<id>)")


class ReproduceCommand(Args):
    """Re-run a run's recorded config into a new run directory and compare the metrics."""

    run_dir: str = operand("the run directory to reproduce")
    tolerance: float = Field(0.0, ge=0, description="largest difference of a metric that "
                             "still counts as the same (0: bit for bit)")


class RepeatCommand(RunFlags):
    """Train one setting with several seeds, as one group."""

    seeds: str = Field(description="how many seeds (3: seeds 0,1,2) or which (0,1,2)")
    workers: int = Field(1, ge=1, le=64, description="runs at once (local processes)")
    name: str | None = Field(None, description="the group's name; auto = from the setting")


class LrFindCommand(RunFlags):
    """Smith's learning-rate range test on the experiment's data, model and optimizer."""

    lr_min: float = Field(1e-7, gt=0, description="the first learning rate")
    lr_max: float = Field(10.0, gt=0, description="the last learning rate (the test stops "
                          "earlier when the loss blows up)")
    steps: int = Field(100, ge=5, le=100_000, description="optimizer steps from --lr_min to --lr_max")


class ExportCommand(Args):
    """Write a run's model as a folder to hand on: its weights in each format asked for, its
    config, the dataset's state, and a model card (README.md) that says how to load them."""

    run_dir: str = operand("the run directory to export")
    weights: Literal["best", "last", "ema", "swa"] = Field(
        "best", description="which weights: the best epoch's (as tested), the last trained, or "
        "the EMA / SWA average at the end (a run trained with --ema_decay / --swa_start)")
    format: list[Literal["safetensors", "pt2", "onnx"]] = Field(
        ["safetensors"], min_length=1, description="safetensors (the weights), pt2 (a "
        "torch.export program) and/or onnx, comma-separated")
    out: str | None = Field(None, description="the folder to write; auto = RUN_DIR/export")


class ListCommand(Args):
    """A table of the runs in the results folder."""

    experiment_id: str | None = Field(None, description="only this experiment's runs")
    status: str | None = Field(None, description="only runs in this state: running, finished, "
                               "stopped, crashed, killed, ...")
    results_dir: str | None = Field(None, description="the results folder; auto = config.yaml's")


class CompareCommand(Args):
    """Runs side by side, and RESULTS/compare.png; runs of one setting over seeds as a group
    (mean ± std, 95% interval)."""

    runs: list[str] = Field(default_factory=list, description="run directories or globs",
                            json_schema_extra=OPERAND)
    experiment_id: str | None = Field(None, description="this experiment's runs")
    last: int | None = Field(None, ge=1, description="only the last N runs")
    out: str | None = Field(None, description="where the plot goes; auto = RESULTS/compare.png")
    group_by: list[str] | None = Field(None, description="group runs by these flags "
                                       "(lr,batch_size); auto = every flag but the seed")
    format: str | None = Field(None, description="text (with the plot), or markdown, latex, csv "
                               "(the table alone on stdout)")
    results_dir: str | None = Field(None, description="the results folder; auto = config.yaml's")


class ReportCommand(Args):
    """A run's self-contained report.html, or RESULTS/index.html of every run."""

    run_dir: str | None = operand("the run directory", None)
    index: bool = Field(False, description="write RESULTS/index.html instead")
    results_dir: str | None = Field(None, description="the results folder; auto = config.yaml's")


class SchemaCommand(Args):
    """The JSON Schema of an experiment's arguments (editor completion of YAML configs)."""

    experiment_id: str = Field(description="the registered experiment")


class CompletionCommand(Args):
    """A shell completion script: commands, flags, experiment ids, choice values."""

    shell: Literal["bash", "zsh"] = operand("bash or zsh")


class NewCommand(Args):
    """Write a new experiment from a template and register it."""

    name: str = operand("the new experiment's id (a Python identifier)")
    template: Literal["classification", "regression"] = Field(
        "classification", description="what the experiment starts from")
    registry: str | None = Field(None, description="the registry module to add it to; auto = "
                                 "the only one installed")


class JobCommand(Args):
    """Inside a SLURM job: start or resume the run the job was submitted for."""

    run_dir: str = operand("the run directory `expkit submit` made")


class SyncCommand(Args):
    """Send finished, stopped or killed runs to the MLflow server of config.yaml."""

    run_dirs: list[str] = Field(min_length=1, description="run directories",
                                json_schema_extra=OPERAND)


class SubmitCommand(RunFlags):
    """Run as a SLURM batch job: a new run directory, a job script in it, sbatch."""

    slurm: SlurmFlags = Field(default_factory=SlurmFlags)


def options(cls: type[Args], argv: list[str], prog: str, usage: str, *, forward: bool = False,
            epilog: str = "", sources: dict[str, str] | None = None) -> tuple[Any, list[str]]:
    """A command's options and the tokens it hands on (`sources`, when given, is filled with
    where each value came from). On --help the command's help is printed and the options are
    None, unless an experiment is named (`repeat --experiment_id=mnist --help`: the command
    goes on, and its run's parser prints that experiment's help)."""
    parsed, rest, wants = parse_options(cls, argv, forward, sources)
    if wants and not getattr(parsed, "experiment_id", None) and not getattr(parsed, "config", None):
        command_help(cls, prog, usage, epilog)
        return None, rest
    return parsed, rest
