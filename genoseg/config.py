"""YAML configuration: schemas as dataclasses, defaults, strict validation.

A config section is a dataclass whose fields carry types and defaults; nested sections are
dataclass-typed fields. :func:`load_config` reads a YAML mapping into such a dataclass:

* an unknown key is an error naming the key (dotted path) and the file;
* values are type-checked (int, float, bool, str, Path, lists, optional ``None``);
* a field without a default is required;
* relative paths (fields typed ``Path``) are resolved against the config file's directory;
* ``overrides`` (e.g. command-line options) replace values after loading; ``None`` values
  in overrides are ignored, so unset CLI options leave the file's values alone.

Every error is a one-line :class:`~genoseg.errors.GenosegError`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from genoseg.errors import GenosegError

__all__ = ["config_to_dict", "load_config", "read_yaml_mapping"]

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def read_yaml_mapping(path: str | Path) -> dict:
    """The top-level mapping of a YAML file; GenosegError naming the file otherwise."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise GenosegError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GenosegError(f"{p}: cannot read config: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GenosegError(f"{p}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GenosegError(f"{p}: a config file must hold a mapping of keys to values")
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str, src: str, base: Path | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, src, base)
            except GenosegError as exc:
                errors.append(exc)
        raise (
            errors[0]
            if len(errors) == 1
            else GenosegError(
                f"{src}: '{key}' must be {' or '.join(_type_name(a) for a in args)}, got {value!r}"
            )
        )
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise GenosegError(f"{src}: '{key}' must be a list, got {value!r}")
        out = [_convert(v, inner, f"{key}[{i}]", src, base) for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise GenosegError(f"{src}: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, src, base, prefix=key + ".")
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise GenosegError(f"{src}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GenosegError(f"{src}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GenosegError(f"{src}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise GenosegError(f"{src}: '{key}' must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)) or str(value) == "":
            raise GenosegError(f"{src}: '{key}' must be a path, got {value!r}")
        p = Path(value).expanduser()
        if base is not None and not p.is_absolute() and str(value) != "-":
            p = base / p
        return p
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # programming error


def _build(cls: type[T], data: Mapping, src: str, base: Path | None, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise GenosegError(f"{src}: unknown key '{prefix}{key}' (allowed: {allowed})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], prefix + name, src, base)
        elif f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
            raise GenosegError(f"{src}: required key '{prefix}{name}' is missing")
    try:
        return cls(**kwargs)
    except (ValueError, GenosegError) as exc:
        raise GenosegError(f"{src}: {exc}") from None


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if v is None:
            continue
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build the dataclass ``cls`` from a YAML file (optional) plus overrides.

    Paths in the file are relative to the file's directory; paths in ``overrides`` are
    relative to the current directory. Raises GenosegError naming the file and key.
    """
    data: dict = {}
    src = "command line"
    base: Path | None = None
    if path is not None:
        data = read_yaml_mapping(path)
        src = str(path)
        base = Path(path).resolve().parent
    # resolve file values first (relative to the file), then apply overrides as given
    merged = _merge(data, overrides or {})
    file_keys = _keys(data)
    for key in _keys(overrides or {}):
        file_keys.discard(key)
    obj = _build(cls, merged, src, None)
    if base is not None:
        obj = _rebase(obj, base, file_keys, "")
    return obj


def _keys(d: Mapping, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        if v is None:
            continue
        out.add(prefix + k)
        if isinstance(v, Mapping):
            out |= _keys(v, prefix + k + ".")
    return out


def _rebase(obj: Any, base: Path, file_keys: set[str], prefix: str) -> Any:
    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(v):
            changes[f.name] = _rebase(v, base, file_keys, key + ".")
        elif isinstance(v, list) and key in file_keys and any(map(dataclasses.is_dataclass, v)):
            # a list of sections from the file (e.g. data.train): every relative path in
            # it is relative to the file (a list given as an override replaces it whole)
            changes[f.name] = [_rebase(x, base, _all_keys(x, key + "."), key + ".") for x in v]
        elif isinstance(v, Path) and key in file_keys and not v.is_absolute() and str(v) != "-":
            changes[f.name] = base / v
    return dataclasses.replace(obj, **changes) if changes else obj


def _all_keys(obj: Any, prefix: str) -> set[str]:
    return {prefix + f.name for f in dataclasses.fields(obj)} | {
        k
        for f in dataclasses.fields(obj)
        if dataclasses.is_dataclass(getattr(obj, f.name))
        for k in _all_keys(getattr(obj, f.name), prefix + f.name + ".")
    }


def config_to_dict(obj: Any) -> Any:
    """Plain YAML-serializable dict of a config dataclass (paths as strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
