"""The one strict converter every config source uses: dicts, flat run-config keys and JSON.

pydantic validates against the frozen stdlib dataclasses themselves, so every other module keeps
building, comparing and hashing the same plain objects. This module adds fedsafe's few rules to
pydantic's lax mode and turns pydantic's error into a ConfigError (key, value, allowed, source).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError, SchemaValidator, core_schema

from fedsafe.common.config.experiment import ExperimentConfig
from fedsafe.common.errors import ConfigError

__all__ = ["from_dict", "from_flat", "to_dict", "to_flat", "load_json"]

T = TypeVar("T")
Loc = tuple[int | str, ...]


def _plain_number(value: Any) -> Any:
    if isinstance(value, bool):  # True is an int to Python, never a number to a config
        raise PydanticCustomError("bool_not_number", "a bool is not a number")
    if not isinstance(value, (int, float, str)):  # bytes, Decimal, ...: never a config number
        raise PydanticCustomError("not_a_number", "not a number")
    return value


def _plain_list(value: Any) -> Any:
    if not isinstance(value, (list, tuple)):  # a set would reorder and drop duplicates
        raise PydanticCustomError("not_a_list", "not a list")
    return value


def _bool_from_text(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # Flower's run config carries strings
    return value


def _fedsafe_rules(schema: Any) -> Any:
    """pydantic's lax schema, less what no config may mean: a bool as a number, 1 or "yes" as a
    bool, or an unknown key. Rewriting the built schema covers every dataclass the config nests,
    those outside common/config included (ReleasePolicy), without a pydantic type in them."""
    if isinstance(schema, list):
        return [_fedsafe_rules(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: v if k in ("metadata", "serialization") else _fedsafe_rules(v) for k, v in schema.items()
    }
    kind = out.get("type")
    if kind in ("int", "float"):
        return core_schema.no_info_before_validator_function(_plain_number, out)
    if kind == "bool":
        strict = {**out, "strict": True}
        return core_schema.no_info_before_validator_function(_bool_from_text, strict)
    if kind == "str":
        return {**out, "strict": True}  # bytes are not text
    if kind == "tuple":
        return core_schema.no_info_before_validator_function(_plain_list, out)
    if kind == "dataclass-args":
        out["extra_behavior"] = "forbid"
    return out


_VALIDATORS: dict[type[Any], SchemaValidator] = {}


def _validator(cls: type[Any]) -> SchemaValidator:
    if cls not in _VALIDATORS:  # built once per class: pydantic compiles the schema
        _VALIDATORS[cls] = SchemaValidator(_fedsafe_rules(TypeAdapter(cls).core_schema))
    return _VALIDATORS[cls]


def _dotted(loc: Loc) -> str:
    """pydantic's location as the config's key: `compliance.consent[0].site`."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else part
    return key


def _declared(cls: type[Any], loc: Loc) -> Any:
    """The type the schema declares at a location (for the message's `allowed`)."""
    tp: Any = cls
    for part in loc:
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp).get(str(part))
        elif typing.get_origin(tp) in (tuple, dict):
            tp = typing.get_args(tp)[-1 if typing.get_origin(tp) is dict else 0]
    return tp


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {' to '.join(_describe(a) for a in typing.get_args(tp))}"
    return getattr(tp, "__name__", str(tp))


def _placed(err: ConfigError, loc: Loc, source: str | None) -> ConfigError:
    """A check's own error, with the source, and its key placed where the section sits
    (ReleasePolicy says `release.x`; in a run config it is `federation.release.x`)."""
    where, head = _dotted(loc), err.key.split(".")[0].split("[")[0]
    key = err.key
    if not key.startswith(where) and where.split(".")[-1] == head:
        key = f"{where[: -len(head)]}{key}"
    return ConfigError(key, err.value, err.allowed, source=err.source or source)


def _config_error(
    cls: type[Any], err: ValidationError, source: str | None, prefix: str
) -> ConfigError:
    """pydantic's first error as fedsafe's; an unknown key first, as it often explains the rest."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "unexpected_keyword_argument"), errors[0])
    loc, kind, value = tuple(first["loc"]), first["type"], first["input"]
    key = f"{prefix}{_dotted(loc)}".rstrip(".") or "<root>"
    if kind == "value_error":
        cause = first["ctx"]["error"]
        if isinstance(cause, ConfigError):
            return _placed(cause, loc, source)
        return ConfigError(key, value, str(cause), source=source)
    if kind == "unexpected_keyword_argument":
        fields = [f.name for f in dataclasses.fields(_declared(cls, loc[:-1]))]
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        parent = f"{prefix}{_dotted(loc[:-1])}".rstrip(".")
        hint = f" (did you mean '{parent}{'.' if parent else ''}{close[0]}'?)" if close else ""
        return ConfigError(key, value, f"one of {sorted(fields)}{hint}", source=source)
    if kind in ("missing", "missing_argument"):
        return ConfigError(key, None, "a value (this key is required)", source=source)
    return ConfigError(key, value, _describe(_declared(cls, loc)), source=source)


def from_dict(cls: type[T], data: Any, *, source: str | None = None, prefix: str = "") -> T:
    """Build a frozen config dataclass from nested plain data, strictly.

    Unknown keys, wrong types and out-of-range values raise ConfigError naming the
    dotted key, the value, what is allowed and the source file. `prefix` places a
    section's keys when `cls` is one section (`strategy.`).
    """
    try:
        result: T = _validator(cls).validate_python(data)
    except ValidationError as err:
        raise _config_error(cls, err, source, prefix) from None
    return result


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
        elif isinstance(value, str) and isinstance(node[leaf], list):
            value = [v for v in value.split(",") if v]
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
