"""The one strict converter every config source uses: dicts, flat run-config keys and JSON."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from fedsafe.common.config.experiment import ExperimentConfig
from fedsafe.common.errors import ConfigError

__all__ = ["from_dict", "from_flat", "to_dict", "to_flat", "load_json"]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {' to '.join(_type_name(a) for a in typing.get_args(tp))}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any, source: str | None) -> Any:
    """Coerce one leaf value to its declared type, or raise ConfigError naming it."""
    origin = typing.get_origin(tp)
    fail = ConfigError(key, value, _type_name(tp), source=source)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise fail
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg, source)
            except ConfigError:
                continue
        raise fail
    if origin is dict:
        if not isinstance(value, dict):
            raise fail
        key_tp, value_tp = typing.get_args(tp)
        return {
            _coerce(key, k, key_tp, source): _coerce(f"{key}.{k}", v, value_tp, source)
            for k, v in value.items()
        }
    if origin is tuple:
        (item_tp, *_) = typing.get_args(tp)
        if isinstance(item_tp, type) and dataclasses.is_dataclass(item_tp):
            if not isinstance(value, (list, tuple)):
                raise fail
            return tuple(
                from_dict(item_tp, v, source=source, prefix=f"{key}[{i}].")
                for i, v in enumerate(value)
            )
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise fail
        return tuple(_coerce(f"{key}[{i}]", v, item_tp, source) for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise fail
    if tp in (int, float):
        if isinstance(value, bool):  # True is an int to Python, never a number to a config
            raise fail
        if isinstance(value, float) and tp is int:
            if value.is_integer():
                return int(value)
            raise fail
        if isinstance(value, (int, float, str)):
            try:
                return tp(value)
            except ValueError:
                raise fail from None
        raise fail
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def from_dict(
    cls: type[Any], data: dict[Any, Any], *, source: str | None = None, prefix: str = ""
) -> Any:
    """Build a frozen config dataclass from nested plain data, strictly.

    Unknown keys, wrong types and out-of-range values raise ConfigError naming the
    dotted key, the value, what is allowed and the source file.
    """
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", data, "a mapping", source=source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{prefix}{key}", data[key], f"one of {sorted(fields)}{hint}", source=source
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, source=source, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, tp, source)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.source is None and source is not None:
            raise ConfigError(err.key, err.value, err.allowed, source=source) from None
        raise


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested data (tuples as lists) for JSON and YAML."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_flat(cfg: Any) -> dict[str, Any]:
    """Dotted keys -> leaf values, the shape Flower's run config carries."""
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(to_dict(cfg), "")
    return flat


def from_flat(flat: dict[str, Any], *, source: str | None = None) -> ExperimentConfig:
    """Dotted overrides (Flower run config, `--run-config`) applied over the defaults.

    Flower's run config cannot hold None or lists, so the string "null" means
    None and comma-separated strings fill list fields.
    """
    nested = to_dict(ExperimentConfig())
    for dotted, value in flat.items():
        key = dotted.replace("-", "_")
        if key == "experiment.name":
            key = "name"
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(dotted, value, "a known dotted config key", source=source)
            node = child
        if leaf not in node:
            known = [k for k in node if not isinstance(node[k], dict)]
            raise ConfigError(
                dotted, value, f"one of {known} under '{'.'.join(parents)}'", source=source
            )
        if isinstance(value, str) and value.lower() == "null":
            value = None
        node[leaf] = value
    return from_dict(ExperimentConfig, nested, source=source)


def load_json(path: Path) -> ExperimentConfig:
    """Read a resolved config written by a previous run (config.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file", str(path), "an existing file", source=str(path)) from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            "config file", str(path), f"valid JSON ({err})", source=str(path)
        ) from None
    return from_dict(ExperimentConfig, data, source=str(path))
