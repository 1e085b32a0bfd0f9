"""A parsed TOML tree → typed, frozen dataclasses, with every problem named by its dotted key.

Any config file of kioskd (the kiosk's, the backend's) is validated here, so every error
reads the same way (``audio.input: expected a string``): :func:`parse_as` and
:func:`load_as` collect *every* problem at once into one :class:`ConfigError`. Unknown
keys are errors: a typo must not pass silently. A section is a dataclass with a
``problems()`` method for the checks its types cannot express.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

__all__ = ["ConfigError", "convert", "load_as", "parse_as", "read_toml"]

T = TypeVar("T")


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds one ``"key: message"`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp) if a is not type(None))
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def convert(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Convert ``value`` (parsed TOML) to ``tp``; on failure, append ``"path: message"`` and return None.

    ``tp`` is a dataclass with a ``problems()`` method, a scalar, ``Literal``, ``Optional``,
    ``list[...]`` or ``dict[str, ...]``. Any config file of kioskd (the kiosk's, the
    backend's) is validated with it, so every error names its dotted key the same way.
    """
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table, got {type(value).__name__}")
            return None
        hints = get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        for key in value:
            if key not in names:
                errors.append(f"{_join(path, key)}: unknown key (known: {', '.join(sorted(names))})")
        kwargs = {}
        before = len(errors)
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = convert(hints[f.name], value[f.name], _join(path, f.name), errors)
        if len(errors) > before:
            return None
        obj: Any = tp(**kwargs)
        for key, message in obj.problems():
            errors.append(f"{_join(path, key)}: {message}")
        return obj
    if origin is Literal:
        if value in get_args(tp) and type(value) is type(get_args(tp)[0]):
            return value
        errors.append(f"{path}: expected {_describe(tp)}, got {value!r}")
        return None
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return convert(options[0], value, path, errors)
        for option in options:
            trial: list[str] = []
            result = convert(option, value, path, trial)
            if not trial:
                return result
        errors.append(f"{path}: expected {_describe(tp)}, got {type(value).__name__}")
        return None
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return None
        (item,) = get_args(tp)
        return [convert(item, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table, got {type(value).__name__}")
            return None
        _, item = get_args(tp)
        return {k: convert(item, v, _join(path, k), errors) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, bool, float) and type(value) is tp:
        return value
    errors.append(f"{path}: expected {_describe(tp)}, got {type(value).__name__} {value!r}")
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_as(tp: type[T], data: dict[str, Any]) -> T:
    """Validate a parsed TOML tree as ``tp``. Raises :class:`ConfigError` listing every problem."""
    errors: list[str] = []
    result = convert(tp, data, "", errors)
    if errors:
        raise ConfigError(errors)
    return cast(T, result)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML file ``path`` as a tree. Raises :class:`ConfigError` when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def load_as(tp: type[T], path: str | os.PathLike[str]) -> T:
    """Read the TOML file ``path`` and validate it as ``tp``. Raises :class:`ConfigError`."""
    return parse_as(tp, read_toml(path))
