"""Typed configuration: strict conversion of plain dicts (TOML, JSON) into dataclasses.

Every config in the suite is a dataclass; :func:`from_dict` refuses unknown keys and
wrong types with one clear line, so a typo in a study file never silently falls back
to a default.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

T = TypeVar("T")

#: field metadata of a derived field, a typed view of other fields (a method's resolved config):
#: :func:`to_dict` leaves it out and :func:`from_dict` does not accept it, so records, hashes and
#: study files never repeat it
DERIVED = {"derived": True}
#: field metadata of an option added to an existing config whose default reproduces what came
#: before: at its default it is left out of a cell's training identity, so that cells trained
#: before the option existed keep their ids (and records and checkpoints); it is always recorded
NEW_OPTION = {"new_option": True}


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return "list"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


_PHRASES = {bool: ["true", "false"], int: ["an integer"], float: ["a number"], str: ["a string"]}
_PLURALS = {bool: "true or false", int: "integers", float: "numbers", str: "strings"}


def _alternatives(tp: Any) -> list[str]:
    """What a value of type ``tp`` may be, in a study file's words ('true', 'an integer', ...)."""
    origin = get_origin(tp)
    if origin is Literal:
        return [repr(a) for a in get_args(tp)]
    if origin in (Union, types.UnionType):
        # a None default is what an omitted key gives; a study file cannot write it
        return [alt for a in get_args(tp) if a is not type(None) for alt in _alternatives(a)]
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _PLURALS:
            return [f"a list of {_PLURALS[args[0]]}"]
        return ["a list"]
    if dataclasses.is_dataclass(tp) or origin in (dict, Mapping) or tp is dict:
        return ["a table"]
    return _PHRASES.get(tp, [_type_name(tp)])


def _expected(tp: Any) -> str:
    alts = _alternatives(tp)
    return alts[0] if len(alts) == 1 else f"{', '.join(alts[:-1])} or {alts[-1]}"


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise :class:`ConfigError` naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(tp)):
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(map(repr, get_args(tp)))}, got {value!r}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_expected(tp)}, got {value!r}")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_expected(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types.

    Values are checked against the field annotations; the dataclass's own
    ``__post_init__`` then checks ranges. Every failure is a :class:`ConfigError`
    whose message names the offending key.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("derived")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(fields))}"
        )
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """A JSON-ready view of a (nested) config dataclass: tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("derived")}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def identity_dict(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a ``to_dict`` of a ``cls`` config) less the :data:`NEW_OPTION` fields at their default."""
    omitted = {f.name for f in dataclasses.fields(cls) if f.metadata.get("new_option")
               and f.default is not dataclasses.MISSING and values.get(f.name) == to_dict(f.default)}
    return {k: v for k, v in values.items() if k not in omitted}


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ConfigError(message)


__all__ = ["DERIVED", "NEW_OPTION", "from_dict", "identity_dict", "to_dict", "require"]
