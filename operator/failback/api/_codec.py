"""One codec between the API's JSON and the typed models.

A model is a frozen dataclass whose field names are the snake_case form of the CRD's
camelCase properties; a field whose JSON name is not the plain camelCase form (an acronym
like ``instanceUUID``) says so with ``field(metadata=json_name("instanceUUID"))``. Field
types are ``str``, ``int``, ``bool``, a ``StrEnum``, ``datetime`` (RFC 3339),
``timedelta`` (CRD durations like ``1h30m``), another model, ``tuple[X, ...]`` of those,
and ``X | None``. A field is required when it has no default and is not ``X | None``.

Decoding names the JSON path of the first bad value (``spec.onPrem.originalVM.instanceUUID``)
in :class:`failback.errors.SpecInvalid`. Encoding omits unset fields (``None`` and empty
tuples), as the API server would prune them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from failback.errors import SpecInvalid

T = TypeVar("T")

_JSON = "json"
_DURATION = re.compile(r"^([0-9]+(h|m|s))+$")
_DURATION_PART = re.compile(r"([0-9]+)(h|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def json_name(name: str) -> dict[str, str]:
    """Field metadata giving a field's JSON name, when it is not the camelCase of its name."""
    return {_JSON: name}


def camel(snake: str) -> str:
    """``rpo_threshold`` → ``rpoThreshold``."""
    first, *rest = snake.split("_")
    return first + "".join(part.capitalize() for part in rest)


def key_of(f: dataclasses.Field[Any]) -> str:
    """The JSON property name of a model field."""
    name: str = f.metadata.get(_JSON, camel(f.name))
    return name


# ------------------------------------------------------------------ durations and times


def parse_duration(text: str) -> dt.timedelta:
    """A CRD duration (``^([0-9]+(h|m|s))+$``, e.g. ``15m``, ``1h30m``, ``0s``) as a timedelta.

    Raises ``ValueError`` for anything else, including Go forms the CRDs do not allow
    (``1.5h``, ``100ms``, ``-1m``).
    """
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration like 15m, 24h or 1h30m")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """The shortest CRD duration for ``value``: ``1h``, ``1h30m``, ``45s``, ``0s``."""
    seconds = int(value.total_seconds())
    if seconds < 0 or value != dt.timedelta(seconds=seconds):
        raise ValueError(f"{value!r} is not a whole, non-negative number of seconds")
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return text or "0s"


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 timestamp with a zone (``2026-11-21T03:00:00Z``), as an aware UTC datetime."""
    try:
        parsed = dt.datetime.fromisoformat(text.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time like 2026-11-21T03:00:00Z")
    return parsed.astimezone(dt.UTC)


def format_time(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; fractional seconds only when there are some."""
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; the API stores UTC times")
    utc = value.astimezone(dt.UTC)
    fraction = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


# ------------------------------------------------------------------ decoding


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved type of every field of a model."""
    return typing.get_type_hints(cls)


def optional_of(hint: Any) -> Any | None:
    """``X`` for ``X | None``; None for any other type."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def decode(cls: type[T], data: object, path: str) -> T:
    """The model ``cls`` read from ``data``, found at JSON path ``path``."""
    value: T = _decode(cls, data, path)
    return value


def _decode(hint: Any, data: object, path: str) -> Any:
    inner = optional_of(hint)
    if inner is not None:
        return None if data is None else _decode(inner, data, path)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _decode_model(hint, data, path)
    if typing.get_origin(hint) is tuple:
        if not isinstance(data, list):
            raise SpecInvalid(path, f"must be a list, not {_json_type(data)}")
        item = typing.get_args(hint)[0]
        return tuple(_decode(item, x, f"{path}[{i}]") for i, x in enumerate(data))
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        allowed = [m.value for m in hint]
        if data not in allowed:
            choices = ", ".join(allowed)
            raise SpecInvalid(path, f"must be one of {choices}, not {data!r}")
        return hint(data)
    return _decode_scalar(hint, data, path)


def _decode_model(cls: type, data: object, path: str) -> Any:
    if data is None:
        raise SpecInvalid(path, "is required")
    if not isinstance(data, Mapping):
        raise SpecInvalid(path, f"must be an object, not {_json_type(data)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = key_of(f)
        value = data.get(key)
        hint = hints(cls)[f.name]
        if value is not None:
            kwargs[f.name] = _decode(hint, value, f"{path}.{key}")
        elif not has_default(f):
            if optional_of(hint) is None:
                raise SpecInvalid(f"{path}.{key}", "is required")
            kwargs[f.name] = None
    return cls(**kwargs)


def _decode_scalar(hint: Any, data: object, path: str) -> Any:
    if hint is bool:
        if isinstance(data, bool):
            return data
        raise SpecInvalid(path, f"must be true or false, not {_json_type(data)}")
    if hint is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        raise SpecInvalid(path, f"must be an integer, not {_json_type(data)}")
    if not isinstance(data, str):
        raise SpecInvalid(path, f"must be a string, not {_json_type(data)}")
    if hint is str:
        return data
    parse = {dt.datetime: parse_time, dt.timedelta: parse_duration}.get(hint)
    if parse is None:
        raise TypeError(f"the API codec cannot read {hint!r} at {path}")
    try:
        return parse(data)
    except ValueError as e:
        raise SpecInvalid(path, str(e)) from None


def _json_type(data: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if data is None:
        return "null"
    if isinstance(data, Mapping):
        return "an object"
    if isinstance(data, list):
        return "a list"
    return names.get(type(data), type(data).__name__)


# ------------------------------------------------------------------ encoding


class Encodable:
    """Mixin for models: ``to_dict()`` is the JSON form the CRD stores (camelCase keys,
    RFC 3339 'Z' times, unset fields left out)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = encode(self)
        return out


def encode(value: Any) -> Any:
    """The JSON form of a model or field value; unset fields (None, ``()``) are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is not None and v != ():
                out[key_of(f)] = encode(v)
        return out
    if isinstance(value, tuple):
        return [encode(v) for v in value]
    if isinstance(value, enum.StrEnum):
        return value.value
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, dt.timedelta):
        return format_duration(value)
    if isinstance(value, bool | int | str):
        return value
    raise TypeError(f"the API codec cannot write {type(value).__name__}")


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``.

    ``to_dict()`` leaves unset fields out, and a merge patch that leaves a key out keeps
    its old value; this patch sets such keys to null so that they are removed. Lists are
    replaced whole, as a merge patch does.
    """
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch
