"""Arguments: the Args base class, the flat flag table of a stitched model, and the --help
written from it (expkit.config.parsing turns argv into a validated model).

Pydantic types, validates and documents every value; argparse only formats --help.
This module must not import torch: `--help` and bad-input errors answer fast.
"""

from __future__ import annotations

import argparse
import inspect
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from expkit.errors import UsageError


class Args(BaseModel):
    """Base of every component's arguments: unknown keys are errors, defaults and assignments validated."""

    # NaN and infinity are never a sensible argument: "--lr=nan" says "finite number" at once
    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True,
                              allow_inf_nan=False)


@dataclass(frozen=True)
class Flag:
    """One command-line flag: a leaf field of the stitched model."""

    name: str  # the flag without "--"
    path: tuple[str, ...]  # where the value lives in the nested model
    group: str  # the part it belongs to: "experiment", "model", "dataset", ...
    field: FieldInfo
    kind: Literal["bool", "list", "value"]
    nullable: bool
    choices: tuple[str, ...] | None
    positional: bool = False  # a command's operand (`resume RUN_DIR`), not a --flag

    @property
    def shown(self) -> str:
        """How errors and --help name it: `--lr`, or `RUN_DIR` for an operand."""
        return self.name.upper() if self.positional else f"--{self.name}"

    @property
    def type_name(self) -> str:
        """Short type shown in --help, e.g. int, list[int], {adam,sgd}."""
        if self.choices:
            return "{" + ",".join(self.choices) + "}"
        return _type_name(_strip_optional(self.field.annotation)[0])


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        return (members[0] if len(members) == 1 else annotation), nullable
    return annotation, False


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        inner = ",".join(_type_name(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation)).lower()


def _is_args_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _leaf(name: str, path: tuple[str, ...], group: str, field: FieldInfo) -> Flag:
    annotation, nullable = _strip_optional(field.annotation)
    choices = None
    if typing.get_origin(annotation) is Literal:
        choices = tuple(str(c) for c in typing.get_args(annotation))
    origin = typing.get_origin(annotation)
    kind: Literal["bool", "list", "value"] = "value"
    if annotation is bool:
        kind = "bool"
    elif origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set):
        kind = "list"
    return Flag(name, path, group, field, kind, nullable, choices,
                bool(_extra(field).get("positional")))


def _extra(field: FieldInfo) -> dict[str, Any]:
    """A field's json_schema_extra as a dict (how a field asks for a flag name or an operand)."""
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def flag_table(cls: type[BaseModel]) -> dict[str, Flag]:
    """The flat flags of a stitched Args model: each leaf field once, under its own name.

    A leaf may choose its flag name with `json_schema_extra={"flag": "..."}`; a part's `name`
    field is the part's flag (the optimizer's `name` is `--optimizer`). A flag name used by
    two parts is a TypeError that names both, raised when the experiment class is defined,
    never a silent shadow.
    """
    table: dict[str, Flag] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...], group: str) -> None:
        for name, field in model.model_fields.items():
            annotation, _ = _strip_optional(field.annotation)
            if _is_args_model(annotation):
                walk(annotation, (*prefix, name), group if prefix else name)
                continue
            extra = _extra(field)
            # a part's `name` is the part's flag (--optimizer=sgd, --dataset=digits), so a
            # subclass that widens `name` keeps it without repeating json_schema_extra
            flag_name = str(extra.get("flag", prefix[-1] if name == "name" and prefix else name))
            flag = _leaf(flag_name, (*prefix, name), group, field)
            if flag_name in table:
                other = ".".join(table[flag_name].path)
                raise TypeError(
                    f"{cls.__name__}: flag --{flag_name} is declared twice, by '{other}' and "
                    f"'{'.'.join(flag.path)}'; rename one of the fields"
                )
            table[flag_name] = flag

    walk(cls, (), "experiment")
    return table


#: --help shows the experiment's own fields first, the shared training recipe last
_GROUP_ORDER = {"experiment": 0, "optimizer": 2, "scheduler": 3, "trainer": 4}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def build_parser(cls: type[BaseModel], prog: str, description: str = "",
                 auto: dict[str, str] | None = None, usage: str | None = None
                 ) -> argparse.ArgumentParser:
    """An argparse parser for `cls`'s flags, grouped by part: what --help prints (`tokenize`
    parses). A field marked `json_schema_extra={"positional": True}` is an operand (RUN_DIR).

    `auto` names what an `auto` default of a flag becomes for this experiment (`{"monitor":
    "val_mse"}`), shown in --help as "(default: auto: val_mse)"."""
    parser = _Parser(prog=prog, description=inspect.cleandoc(description), allow_abbrev=False,
                     add_help=False, usage=usage or f"{prog} [--flag=value ...]",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups: dict[str, argparse._ArgumentGroup] = {}
    if usage is not None:  # a command: its own options and --help in one group
        groups["experiment"] = parser.add_argument_group("options")
    (groups.get("experiment") or parser).add_argument(
        "-h", "--help", action="store_true", default=argparse.SUPPRESS, help="show this help and exit")
    flags = sorted(flag_table(cls).values(), key=lambda f: _GROUP_ORDER.get(f.group, 1))
    for flag in flags:
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(*_group_title(cls, flag.group))
        if flag.field.is_required():
            shown = "required"
        else:
            default = flag.field.get_default(call_default_factory=True)
            shown = ("auto" if default is None and flag.nullable
                     else json.dumps(default, default=str))
            if shown == "auto" and flag.name in (auto or {}):
                shown = f"auto: {(auto or {})[flag.name]}"
        said = shown == "auto" and "auto =" in (flag.field.description or "")  # "auto = ..." said it
        help_text = (f"{flag.field.description or ''}" + ("" if said else f" (default: {shown})")
                     ).replace("%", "%%")
        if flag.positional:
            groups[flag.group].add_argument(
                flag.shown, nargs="*" if flag.kind == "list" else None,
                help=(flag.field.description or "").replace("%", "%%"))
            continue
        kwargs: dict[str, Any] = dict(dest=flag.name, action="append", default=argparse.SUPPRESS,
                                      metavar=flag.type_name, help=help_text)
        if flag.kind == "bool":
            kwargs.update(nargs="?", const="true", metavar="bool")
        groups[flag.group].add_argument(f"--{flag.name}", **kwargs)
    return parser


def command_help(cls: type[BaseModel], prog: str, usage: str, epilog: str = "") -> None:
    """Print an expkit command's --help, written from its options model: `usage`, the model's
    docstring, each option with its description and default, then `epilog`."""
    parser = build_parser(cls, prog, (cls.__doc__ or "").strip(), usage=usage)
    parser.epilog = epilog or None
    parser.print_help()


def _group_title(cls: type[BaseModel], group: str) -> tuple[str, str | None]:
    if group == "experiment":
        return "experiment", (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None
    field = cls.model_fields[group]
    part, _ = _strip_optional(field.annotation)
    doc = (part.__doc__ or "").strip().splitlines()
    return f"{group} ({part.__name__})", doc[0] if doc else None
