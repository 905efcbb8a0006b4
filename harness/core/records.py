"""Typed JSON records: a frozen dataclass read back from JSON with every field checked against its
type hint, so that a stale or hand-edited file fails on load with the file and field named, instead
of as a KeyError deep inside a run."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from harness.core.errors import UserError

Record = TypeVar("Record")


def record_from_dict(cls: type[Record], data: Any, source: str, fix: str = "") -> Record:
    """`cls(**data)` after checking that `data` has exactly the fields of the dataclass `cls`, each of
    the hinted type (`str`, `int`, `float`, `bool`, `X | None`, `tuple[X, ...]` from a JSON list,
    `dict[str, X]`). Errors name `source` (the file) and end with `fix` (how to repair it)."""
    hints = typing.get_type_hints(cls)
    fields = {field.name: hints[field.name] for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    suffix = f"; {fix}" if fix else ""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a JSON object, got {type(data).__name__}{suffix}")
    missing = sorted(set(fields) - set(data))
    unknown = sorted(set(data) - set(fields))
    if missing or unknown:
        parts = [
            f"missing field(s) {', '.join(missing)}" if missing else "",
            f"unknown field(s) {', '.join(unknown)}" if unknown else "",
        ]
        raise UserError(
            f"{source}: {' and '.join(p for p in parts if p)} (written by another version?){suffix}"
        )
    values = {}
    for name, hint in fields.items():
        if not _matches(data[name], hint):
            raise UserError(
                f"{source}: field '{name}' should be {_describe(hint)}, got {data[name]!r}{suffix}"
            )
        values[name] = _convert(data[name], hint)
    return cls(**values)


def read_record(cls: type[Record], path: Path, fix: str = "") -> Record:
    """A record from the JSON file at `path` (see `record_from_dict`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable JSON file ({error}){'; ' + fix if fix else ''}") from error
    return record_from_dict(cls, data, str(path), fix)


def record_to_dict(record: Any) -> dict[str, Any]:
    """The JSON form of a record (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(record)))


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items()
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is Any:
        return True
    return isinstance(value, hint)


def _convert(value: Any, hint: Any) -> Any:
    if typing.get_origin(hint) is tuple or (
        typing.get_origin(hint) in (typing.Union, types.UnionType) and isinstance(value, list)
    ):
        return tuple(value)
    return value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return "an object"
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(
        hint, str(hint)
    )
