"""expkit's own commands parse their options as an experiment parses its flags: each declares
an Args model, --help is written from it, and a bad option reads like a bad flag."""

from __future__ import annotations

import pytest

from conftest import Workspace

#: each of expkit's own commands and the Args model that declares its options
COMMAND_OPTIONS = {
    "resume": "ResumeCommand", "reproduce": "ReproduceCommand", "sweep": "SweepCommand",
    "repeat": "RepeatCommand", "lr-find": "LrFindCommand", "compare": "CompareCommand",
    "report": "ReportCommand", "export": "ExportCommand",
    "submit": "SubmitCommand", "job": "JobCommand", "sync": "SyncCommand", "list": "ListCommand",
    "schema": "SchemaCommand", "completion": "CompletionCommand", "new": "NewCommand",
}


def _options_model(name: str) -> type:
    import expkit.cli.flags as flags
    import expkit.sweep.spec as spec

    return getattr(flags, COMMAND_OPTIONS[name], None) or getattr(spec, COMMAND_OPTIONS[name])


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_each_command_declares_its_options_once_and_its_help_is_written_from_them(
        workspace: Workspace, command: str) -> None:
    """One way to parse options: every command's options are an Args model; --help lists each
    with its description, whatever else is on the line, and writes nothing."""
    from expkit.cli.main import COMMANDS
    from expkit.config.args import flag_table

    assert set(COMMAND_OPTIONS) == set(COMMANDS) - {"run"}
    table = flag_table(_options_model(command))
    shown = workspace.run(command, "--help", "--bogus=1")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: run.py {command}")
    text = " ".join(shown.stdout.split())  # argparse wraps descriptions
    for flag in table.values():
        assert flag.shown in shown.stdout, f"{command} --help lacks {flag.shown}"
        first_words = " ".join((flag.field.description or "").split()[:3])
        assert first_words in text, f"{command} --help lacks the description of {flag.shown}"
    assert list(workspace.root.iterdir()) == []


@pytest.mark.parametrize(("argv", "says"), [
    (["list", "--status"], "--status: needs a value, as --status=VALUE"),
    (["list", "--bogus=1"], "unknown flag --bogus"),
    (["list", "--experimnt_id=mnist"], "unknown flag --experimnt_id (did you mean --experiment_id?)"),
    (["compare", "--last=x"], "--last: got 'x': Input should be a valid integer"),
    (["compare", "--last=0"], "--last: got '0': Input should be greater than or equal to 1"),
    (["reproduce"], "RUN_DIR is required"),
    (["reproduce", "a", "b"], "unexpected argument 'b'"),
    (["reproduce", "a", "--tolerance=-1"], "--tolerance: got '-1'"),
    (["completion", "fish"], "SHELL: got 'fish': Input should be 'bash' or 'zsh'"),
    (["sync"], "RUN_DIRS is required (run directories)"),
    (["schema"], "--experiment_id is required"),
    (["repeat", "--seeds=3", "--workers=65", "--experiment_id=mnist"],
     "--workers: got '65': Input should be less than or equal to 64"),
    (["sweep", "--experiment_id=mnist", "--trials=x", "--space", "lr=uniform:0.1:0.2"],
     "--trials: got 'x': Input should be a valid integer"),
    (["submit", "--experiment_id=mnist", "--slurm_nodes"], "--slurm_nodes: needs a value"),
])
def test_a_commands_bad_option_reads_like_an_experiments_bad_flag(
        workspace: Workspace, argv: list[str], says: str) -> None:
    """The same tokenizer and validator as an experiment's flags: the same one-line errors."""
    result = workspace.run(*argv)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr, result.stderr
    assert all(line.startswith("run.py: ") for line in result.stderr.splitlines())
    assert list(workspace.root.iterdir()) == []
