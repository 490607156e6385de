"""Dataclasses from their JSON form and back: the generic half of splitpoint.bench.results."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: Any) -> T:
    """An instance of dataclass `cls` from its JSON form (unknown keys are ignored: newer writers).
    ValueError naming the field (`traces[0].rtt_ms: expected a number, got a string`) when a value
    is not of its field's kind: a hand-edited or foreign file said "TraceResult: expected an object",
    or ended in a TypeError traceback."""
    return _convert(cls, data, "")  # type: ignore[no-any-return]


_KINDS = {float: ((int, float), "a number"), int: ((int,), "an integer"), str: ((str,), "a string"),
          bool: ((bool,), "true or false")}


def _kind(value: Any) -> str:
    """What a JSON value is, in words."""
    if isinstance(value, bool):
        return "true or false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def _convert(tp: Any, value: Any, at: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value, at) if len(inner) == 1 else value

    def wrong(want: str) -> ValueError:
        return ValueError(f"{at or 'the file'}: expected {want}, got {_kind(value)}")

    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise wrong("an object")
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _convert(hints[f.name], value[f.name], f"{at}.{f.name}" if at else f.name)
                     for f in dataclasses.fields(tp) if f.name in value})
    if origin is list:
        if not isinstance(value, list):
            raise wrong("a list")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong("an object")
        _, item = typing.get_args(tp)
        return {str(k): _convert(item, v, f"{at}.{k}") for k, v in value.items()}
    if tp in _KINDS:
        ok, want = _KINDS[tp]
        if not isinstance(value, ok) or (isinstance(value, bool) and tp is not bool):
            raise wrong(want)
    return value


def jsonable(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set):
        return sorted(o)
    return str(o)
