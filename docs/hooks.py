"""mkdocs hooks: the command-line reference is written from the code at build time (each
command's and each experiment's --help, generated from their Args models), so it cannot
drift from what the program accepts."""

from __future__ import annotations

import contextlib
import io
from typing import Any

MARK = "<!-- expkit:cli -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the generated references where a page asks for them."""
    if MARK in markdown:
        markdown = markdown.replace(MARK, cli_reference())
    if CONFIG_MARK in markdown:
        markdown = markdown.replace(CONFIG_MARK, config_reference())
    return markdown


def _help(argv: list[str]) -> str:
    from expkit.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--help"], registry="lab.registry", prog="expkit")
    if code != 0:
        raise RuntimeError(f"expkit {' '.join(argv)} --help exited {code}")
    return out.getvalue().rstrip()


def cli_reference() -> str:
    """Markdown: `expkit --help`, each command's --help, each shipped experiment's --help."""
    from expkit.cli.main import COMMANDS
    from expkit.cli.options import SUMMARIES
    from expkit.config.registry import Registry

    parts = ["## expkit", "", "```text", _help([]), "```", ""]
    for name in COMMANDS:
        if name == "run":
            continue
        what, _, usage = SUMMARIES[name].partition(": ")
        parts += [f"## expkit {name}", "", what[0].upper() + what[1:] + (f": `{usage}`" if usage else "."),
                  "", "```text", _help([name]), "```", ""]
    registry = Registry.from_module("lab.registry")
    parts += ["## The example experiments", "",
              "Every flag of each experiment in `src/lab` (`expkit --experiment_id=ID --help`).", ""]
    for exp_id in registry.ids():
        parts += [f"### {exp_id}", "", "```text", _help([f"--experiment_id={exp_id}"]), "```", ""]
    return "\n".join(parts)


CONFIG_MARK = "<!-- expkit:config -->"


def config_reference() -> str:
    """Markdown: every key of config.yaml (section.key), its default, what it is for, and the
    environment variable that overrides it, from MachineConfig itself."""
    from pydantic import BaseModel

    from expkit.config.machine import ENV_OVERRIDES, MachineConfig

    by_key = {".".join(path): env for env, path in ENV_OVERRIDES.items()}
    rows = ["| key | default | what it is for | environment |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            default = field.get_default(call_default_factory=True)
            key = f"{prefix}{name}"
            env = f"`{by_key[key]}`" if key in by_key else ""
            rows.append(f"| `{key}` | `{default if default is not None else 'none'}` | "
                        f"{(field.description or '').replace('|', '/')} | {env} |")

    walk(MachineConfig, "")
    return "\n".join(rows)
