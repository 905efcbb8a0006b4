"""Command-line flags derived from config dataclasses, so that every command that takes a setting
declares it the same way (name, help, type, choices, default) and flags cannot drift apart.

A field becomes a flag through its metadata, written with `flag(...)`:

    limit: int | None = field(default=None, metadata=flag("evaluate only the first N questions", positive=True))

The flag is `--limit` (the field name with dashes), its type comes from the annotation (`int`,
`float`, `Path`, `str`; `bool` is a switch), its choices from a `Literal[...]` annotation, its
default from the field. `add_dataclass_arguments(parser, Config, only=[...])` adds the chosen
fields to a parser; `config_from_args(Config, args, **overrides)` builds the config back.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

Config = TypeVar("Config")

_MISSING = dataclasses.MISSING


def flag(
    help: str,
    *,
    metavar: str | None = None,
    positive: bool = False,
    per_task: bool = False,
    parse: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Field metadata that makes a dataclass field a command-line flag.

    `positive`: a number that must be > 0 (checked by argparse). `per_task`: a path given as PATH
    for every task or TASK=PATH per task, repeatable (the command resolves it for its task).
    `parse`: turns the command-line text into the field's value (e.g. "k=v,k=v" into a dict)."""
    return {
        "cli": {"help": help, "metavar": metavar, "positive": positive, "per_task": per_task, "parse": parse}
    }


def cli_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    """The fields of `config_cls` that are command-line flags, in declaration order."""
    return {f.name: f for f in dataclasses.fields(config_cls) if "cli" in f.metadata}


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    config_cls: type,
    *,
    only: Iterable[str] | None = None,
    positional: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
    required: Iterable[str] = (),
    per_task: bool = True,
) -> None:
    """Add the flags of `config_cls`'s fields (all, or those named in `only`, in that order).

    `positional`: fields taken as positional arguments; `rename`: other option names for fields
    (the value still lands in `args.<field name>`); `required`: fields that must be given even though
    they have a default; `per_task=False`: per-task path fields take one plain path."""
    fields = cli_fields(config_cls)
    hints = typing.get_type_hints(config_cls)
    names = list(fields) if only is None else list(only)
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no command-line field(s) {', '.join(unknown)}")
    positional, required, rename = set(positional), set(required), dict(rename or {})
    for name in names:
        spec = fields[name].metadata["cli"]
        kwargs = _argument_kwargs(fields[name], hints[name], per_task=per_task)
        if name in positional:
            kwargs.pop("required", None)
            parser.add_argument(name, **kwargs)
            continue
        if name in required:
            kwargs["required"] = True
        if spec["per_task"] and per_task:
            kwargs.pop("required", None)
        parser.add_argument(rename.get(name, option_name(name)), dest=name, **kwargs)


def config_from_args(config_cls: type[Config], args: argparse.Namespace, **overrides: Any) -> Config:
    """`config_cls(...)` from the parsed flags of its fields (those the parser has), parsed by their
    `parse` functions, with `overrides` taking precedence."""
    values = {}
    for name, field in cli_fields(config_cls).items():
        if name in overrides or not hasattr(args, name):
            continue
        value = getattr(args, name)
        parse = field.metadata["cli"]["parse"]
        values[name] = parse(value) if parse is not None else value
    return config_cls(**values, **overrides)


def _argument_kwargs(field: dataclasses.Field, hint: Any, *, per_task: bool) -> dict[str, Any]:
    spec = field.metadata["cli"]
    kwargs: dict[str, Any] = {"help": spec["help"]}
    if spec["metavar"]:
        kwargs["metavar"] = spec["metavar"]
    if field.default is not _MISSING:
        kwargs["default"] = field.default
    elif field.default_factory is _MISSING:  # type: ignore[misc]
        kwargs["required"] = True
    base = _without_none(hint)
    if spec["per_task"] and per_task:
        kwargs.update(action="append", default=None)
        plain = spec["metavar"] or "PATH"
        kwargs["help"] += f" (or TASK={plain} per task, repeatable)"
        kwargs["metavar"] = f"[TASK=]{plain}"
    elif spec["parse"] is not None:
        kwargs.update(type=str, default="")
    elif base is bool:
        kwargs.update(action="store_true", default=False)
    elif typing.get_origin(base) is typing.Literal:
        kwargs["choices"] = typing.get_args(base)
    elif base in (int, float):
        kwargs["type"] = _positive(base) if spec["positive"] else base
    elif base is Path:
        kwargs["type"] = Path
    return kwargs


def _without_none(hint: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive_{kind.__name__}"
    return parse
