"""argv -> a validated Args model: the one tokenizer of expkit's command lines (an
experiment's flags and expkit's own commands), a config file's keys nested as the model wants
them, and Pydantic's errors as one line per problem naming the flag or key.

This module must not import torch: `--help` and bad-input errors answer fast.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from pydantic import BaseModel, ValidationError

from expkit.config.args import Flag, _extra, _strip_optional, flag_table
from expkit.errors import UsageError
from expkit.utils.suggest import closest

_NULL_WORDS = ("none", "null", "auto")


def _convert(flag: Flag, given: list[str | None]) -> Any:
    """Turn the strings given for one flag into what Pydantic validates; raises ValueError."""
    if flag.kind != "list" and len(given) > 1:
        raise ValueError(f"given {len(given)} times ({', '.join(map(repr, given))}); give it once")
    if flag.kind == "list":
        items: list[Any] = []
        for raw in given:
            text = (raw or "").strip()
            if flag.nullable and text.lower() in _NULL_WORDS and len(given) == 1:
                return None
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f"got {raw!r}, which is not a JSON list ({e.msg}); "
                                     "write it as [64,32] or 64,32") from None
                if not isinstance(value, list):
                    raise ValueError(f"got {raw!r}; expected a list such as [64,32] or 64,32")
                items.extend(value)
            elif text and _extra(flag.field).get("whole"):  # one item per flag: `--x=a,b` is "a,b"
                items.append(text)
            elif text:
                items.extend(part.strip() for part in text.split(","))
        return items
    raw = given[0]
    if flag.nullable and (raw or "").strip().lower() in _NULL_WORDS:
        return None
    return raw


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _suggest(word: str, options: typing.Iterable[str], prefix: str = "") -> str:
    match = closest(word, options)
    if match is None:
        return ""
    return f" (did you mean {prefix}{match}?)" if prefix else f" (did you mean '{match}'?)"


def describe_validation_error(error: ValidationError, table: dict[str, Flag] | None,
                              given: dict[tuple[str, ...], str] | None = None,
                              where: str = "") -> list[str]:
    """One line per Pydantic error: the flag (or key), the value given, what was expected.

    Values not in `given` (the command line) are named as keys, prefixed by `where` (a file).
    """
    by_path = {f.path: f for f in (table or {}).values()}
    lines = []
    for err in error.errors():
        loc = tuple(str(p) for p in err["loc"])
        flag = next((by_path[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in by_path), None)
        msg = err["msg"]
        if flag is not None and err["type"] == "missing":
            lines.append(f"{flag.shown} is required" + (f" ({flag.field.description})"
                                                        if flag.field.description else ""))
            continue
        if flag is not None and given is not None and flag.path not in given:
            flag = None  # it came from a file: name the key in that file
        if flag is None:
            name = f"key '{'.'.join(loc)}'" if loc else "arguments"
            got = f" got {err['input']!r}:" if loc and err["type"] != "missing" else ""
            lines.append(f"{where}{name}:{got} {msg}")
            continue
        item = f" (item {int(loc[len(flag.path)]) + 1})" if len(loc) > len(flag.path) else ""
        raw = (given or {}).get(flag.path)
        value = raw if raw is not None else err.get("input")
        hint = _suggest(str(err.get("input")), flag.choices) if flag.choices else ""
        if flag.kind == "bool" and err["type"].startswith("bool"):
            hint = f"; use --{flag.name}=true or --{flag.name}=false"
        lines.append(f"{where}{flag.shown}: got {value!r}{item}: {msg}{hint}")
    return lines


@dataclass
class Tokens:
    """argv split by a flag table: the strings each known flag got, the operands, what is not ours."""

    given: dict[str, list[str | None]] = dc_field(default_factory=dict)
    operands: list[str] = dc_field(default_factory=list)
    forwarded: list[str] = dc_field(default_factory=list)  # unknown flags, in order (when forwarding)
    problems: list[str] = dc_field(default_factory=list)
    help: bool = False


_BOOL_WORDS = ("true", "false", "1", "0", "yes", "no")


def _is_flag(token: str) -> bool:
    """`--lr`, `-x`: a flag; `3e-4`, `-1`, `-`, "": a value."""
    if not token.startswith("-") or len(token) < 2:
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def tokenize(argv: list[str], table: dict[str, Flag], forward: bool = False) -> Tokens:
    """The one tokenizer of expkit's command lines (experiments' flags and expkit's own commands).

    `--name=value` and `--name value`; a bool flag alone is true, and takes the next token only
    when it is a boolean word (`--print_config --lr 3e-5` leaves `--lr 3e-5` intact); a token
    that is not a flag fills the table's positional field. With `forward`, flags the table does
    not know (and tokens no operand takes) are kept in order for another parser (`repeat`
    hands them to the experiment); without, each is a problem with a did-you-mean.
    """
    tokens = Tokens()
    operand = next((f for f in table.values() if f.positional), None)
    skip_value = False
    i = 0
    while i < len(argv):
        token, i = argv[i], i + 1
        following = argv[i] if i < len(argv) else None
        if token in ("-h", "--help"):
            tokens.help = True
            if forward:
                tokens.forwarded.append(token)
        elif not _is_flag(token):
            if operand is not None and not skip_value and (operand.kind == "list" or not tokens.operands):
                tokens.operands.append(token)
            elif forward:
                tokens.forwarded.append(token)
            elif not skip_value:
                tokens.problems.append(f"unexpected argument {token!r} (flags look like --name=value)")
            skip_value = False
            continue
        else:
            name, eq, value = token[2:].partition("=")
            flag = table.get(name) if token.startswith("--") else None
            if flag is None or flag.positional:
                if forward:
                    tokens.forwarded.append(token)
                else:
                    name = token.lstrip("-").split("=", 1)[0]
                    tokens.problems.append(f"unknown flag --{name}"
                                           f"{_suggest(name, _named(table), '--')}")
                    skip_value = not eq
                continue
            if not eq and flag.kind == "bool":
                taken = following is not None and following.lower() in _BOOL_WORDS
                value, i = (following, i + 1) if taken and following is not None else ("true", i)
            elif not eq:
                if following is None or _is_flag(following):
                    tokens.problems.append(f"--{name}: needs a value, as --{name}=VALUE")
                    continue
                value, i = following, i + 1
            tokens.given.setdefault(name, []).append(value)
        skip_value = False
    return tokens


def _named(table: dict[str, Flag]) -> list[str]:
    return [name for name, flag in table.items() if not flag.positional]


def parse_argv(cls: type[BaseModel], argv: list[str], prog: str,
               base: dict[str, Any] | None = None, base_name: str = "",
               sources: dict[str, str] | None = None) -> BaseModel:
    """Validate argv against `cls` (on top of `base` values) or raise UsageError listing every problem.

    `base` holds values from a file (`base_name`, named in its errors); flags override it.
    `sources`, when given, is filled with each leaf's origin: "cli", the file, or "default".
    """
    model, _ = parse_tokens(cls, tokenize(argv, flag_table(cls)), base, base_name, sources)
    return model


def parse_options(cls: type[BaseModel], argv: list[str], forward: bool = False,
                  sources: dict[str, str] | None = None) -> tuple[Any, list[str], bool]:
    """An expkit command's options: (the validated `cls`, the tokens forwarded, whether --help
    was asked for). Parsed by the experiments' own code: same tokenizer, same error lines.

    With `forward`, flags `cls` does not declare are returned in order (a run's flags that
    `repeat` or `submit` hands on); without, they are errors. On --help a line that does not
    validate is no error: the options then hold the strings given (enough to pick whose help).
    """
    tokens = tokenize(argv, flag_table(cls), forward)
    try:
        model: Any = parse_tokens(cls, tokens, sources=sources)[0]
    except UsageError:
        if not tokens.help:
            raise
        raw: dict[str, Any] = {name: values[-1] for name, values in tokens.given.items()
                               if name in cls.model_fields}
        model = cls.model_construct(**raw)
    return model, tokens.forwarded, tokens.help


def parse_tokens(cls: type[BaseModel], tokens: Tokens, base: dict[str, Any] | None = None,
                 base_name: str = "", sources: dict[str, str] | None = None
                 ) -> tuple[BaseModel, dict[tuple[str, ...], str]]:
    """Validate what `tokenize` found (over `base`, a file's values) into `cls`; every problem
    in one UsageError. Returns the model and, per field path, the text the command line gave."""
    table = flag_table(cls)
    problems = list(tokens.problems)
    data, file_problems = nest_keys(cls, base or {}, table)
    problems += [f"{base_name}: {line}" if base_name else line for line in file_problems]
    in_base = {f.path for f in table.values() if _has_path(data, f.path)}
    given: dict[tuple[str, ...], str] = {}
    for flag in table.values():
        values: list[str | None] | None = (list(tokens.operands) or None) if flag.positional \
            else tokens.given.get(flag.name)
        if values is None:
            continue
        given[flag.path] = values[-1] or "" if len(values) == 1 else ",".join(v or "" for v in values)
        try:
            _set(data, flag.path, values if flag.positional and flag.kind == "list"
                 else _convert(flag, values))
        except ValueError as e:
            problems.append(f"{flag.shown}: {e}")
            given.pop(flag.path)
    try:  # a part given only in part (`--max_train_samples`) keeps the experiment's default part
        model = cls.model_validate(with_part_defaults(cls, data))
    except ValidationError as e:
        problems += describe_validation_error(e, table, given, f"{base_name}: " if base_name else "")
        model = None
    if problems or model is None:
        raise UsageError(*problems)
    if sources is not None:
        for flag in table.values():
            origin = "cli" if flag.path in given else (base_name or "file") if flag.path in in_base \
                else "default"
            sources[".".join(flag.path)] = origin
    return model, given


def nest_keys(cls: type[BaseModel], values: dict[str, Any], table: dict[str, Flag] | None = None
              ) -> tuple[dict[str, Any], list[str]]:
    """A config file's values as the nested model wants them, and one line per unknown key.

    A file may use the flag names, flat (`lr: 3e-4`), or the nested form (`optimizer: {lr: 3e-4}`,
    what config.json holds), or both. An unknown key gets a did-you-mean, as a flag does.
    """
    table = table if table is not None else flag_table(cls)
    data: dict[str, Any] = {}
    problems: list[str] = []
    unknown: list[tuple[str, ...]] = []

    def check(model: type[BaseModel], tree: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in tree.items():
            field = model.model_fields.get(str(key))
            part = _strip_optional(field.annotation)[0] if field is not None else None
            if field is None:
                where = ".".join((*prefix, str(key)))
                options = [*model.model_fields, *(f.name for f in table.values() if not prefix)]
                problems.append(f"unknown key {where!r}{_suggest(str(key), options)}")
                unknown.append((*prefix, str(key)))
            elif isinstance(part, type) and issubclass(part, BaseModel) and isinstance(value, dict):
                check(part, value, (*prefix, str(key)))

    for key, value in values.items():
        flag = table.get(str(key))
        # `scheduler: cosine` is the flag --scheduler; `scheduler: {name: cosine}` the nested part
        if flag is not None and (str(key) not in cls.model_fields or (len(flag.path) > 1
                                 and not isinstance(value, dict))):
            if _has_path(data, flag.path) or _has_path(values, flag.path):
                problems.append(f"key {key!r} is given twice: flat and as {'.'.join(flag.path)!r}")
            _set(data, flag.path, value)
            continue
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**value, **data[key]}
        else:
            data[key] = value
    check(cls, {k: v for k, v in values.items()
                if str(k) not in table or (str(k) in cls.model_fields and isinstance(v, dict))}, ())
    data = json.loads(json.dumps(data))
    for path in unknown:  # said above, with a suggestion: not again as Pydantic's "extra inputs"
        node = data
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return data, problems


def with_part_defaults(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` with each part it gives only some keys of completed from the part's default, so
    that `--max_train_samples=5` (or a file's `dataset: {max_train_samples: 5}`) keeps the
    `dataset: ImageDataArgs(name="fashion_mnist")` the experiment chose instead of rebuilding
    the part from its class defaults."""
    out = dict(data)
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None or not isinstance(value, dict):
            continue
        part = _strip_optional(field.annotation)[0]
        default = field.get_default(call_default_factory=True)
        if isinstance(part, type) and issubclass(part, BaseModel):
            filled = with_part_defaults(part, value)
            out[key] = {**default.model_dump(), **filled} if isinstance(default, BaseModel) else filled
    return out


def _has_path(tree: dict[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True

