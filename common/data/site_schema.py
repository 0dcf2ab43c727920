"""A site file's schema (YAML data dictionary): column types, levels, target, missing policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fedsafe.common.data.schema import OUTSIDE_RULES, SCALE_KINDS, NumericScale, TabularSchema
from fedsafe.common.errors import DataError

__all__ = ["ColumnSpec", "SiteFileSchema", "load_site_schema", "COLUMN_TYPES", "MISSING_POLICIES"]

COLUMN_TYPES = ("numeric", "categorical", "binary")
MISSING_POLICIES = ("drop_row", "impute", "error")
ColumnType = Literal["numeric", "categorical", "binary"]
MissingPolicy = Literal["drop_row", "impute", "error"]
logger = logging.getLogger("fedsafe.data")
_DEFAULT_NA = ("", "NA", "N/A", "NaN", "nan", "null")
_TOP_KEYS = ("version", "columns", "target", "missing", "site_id", "na_values")
_COLUMN_KEYS = ("type", "levels", "missing", "range", "scale", "outside")
_TARGET_KEYS = ("column", "positive", "negative", "missing")


class _Loader(yaml.SafeLoader):
    """YAML without implicit booleans: a level spelled `yes`/`no`/`on` stays that string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class ColumnSpec:
    """One feature column: its type, declared levels (categorical only) and missing policy."""

    name: str
    type: ColumnType
    missing: MissingPolicy
    levels: tuple[str, ...] = ()
    # Numeric columns: the declared range every site scales by (never fitted on rows).
    scale: NumericScale | None = None


@dataclass(frozen=True)
class SiteFileSchema:
    """What every site agrees a data file holds; public metadata, never statistics of rows."""

    path: str
    columns: tuple[ColumnSpec, ...]
    target: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    target_missing: MissingPolicy
    site_id: str | None
    na_values: tuple[str, ...]

    @property
    def tabular(self) -> TabularSchema:
        """The encoder's view: binary columns are numeric 0/1, categoricals keep their levels."""
        binary = NumericScale(0.0, 1.0)
        scales = [(c.name, binary) for c in self.columns if c.type == "binary"]
        scales += [(c.name, c.scale) for c in self.columns if c.scale is not None]
        return TabularSchema(
            numeric=tuple(c.name for c in self.columns if c.type != "categorical"),
            categorical=tuple((c.name, c.levels) for c in self.columns if c.type == "categorical"),
            target=self.target,
            scales=tuple(scales),
        )

    @property
    def expected_columns(self) -> tuple[str, ...]:
        extra = (self.site_id,) if self.site_id else ()
        return (*(c.name for c in self.columns), self.target, *extra)


def _fail(path: Path, key: str, what: str) -> DataError:
    return DataError(f"schema file {path}: key '{key}': {what}")


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, key, f"expected a mapping, got {value!r}")
    return value


def _known(data: dict[str, Any], allowed: tuple[str, ...], path: Path, prefix: str) -> None:
    for key in data:
        if key not in allowed:
            raise _fail(path, f"{prefix}{key}", f"unknown key; allowed keys: {list(allowed)}")


def _labels(value: Any, path: Path, key: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(v, (dict, list)) or v is None for v in items):
        raise _fail(path, key, f"expected a non-empty list of labels, got {value!r}")
    labels = tuple(str(v) for v in items)
    if len(set(labels)) != len(labels):
        raise _fail(path, key, f"labels are repeated: {list(labels)}")
    return labels


def _policy(value: Any, path: Path, key: str, default: MissingPolicy) -> MissingPolicy:
    if value is None:
        return default
    if value not in MISSING_POLICIES:
        raise _fail(path, key, f"got {value!r}; allowed: {' | '.join(MISSING_POLICIES)}")
    return value  # type: ignore[no-any-return]


def _column(name: Any, spec: Any, path: Path, default: MissingPolicy) -> ColumnSpec:
    key = f"columns.{name}"
    if not isinstance(name, str) or not name:
        raise _fail(path, key, "column names must be non-empty strings")
    if isinstance(spec, str):  # shorthand: `age: numeric`
        spec = {"type": spec}
    spec = _mapping(spec, path, key)
    _known(spec, _COLUMN_KEYS, path, f"{key}.")
    kind = spec.get("type")
    if kind not in COLUMN_TYPES:
        raise _fail(path, f"{key}.type", f"got {kind!r}; allowed: {' | '.join(COLUMN_TYPES)}")
    levels: tuple[str, ...] = ()
    if kind == "categorical":
        levels = _labels(spec.get("levels"), path, f"{key}.levels", required=True)
    elif "levels" in spec:
        raise _fail(
            path, f"{key}.levels", f"levels are declared only for categorical columns, not {kind}"
        )
    missing = _policy(spec.get("missing"), path, f"{key}.missing", default)
    return ColumnSpec(name, kind, missing, levels, _scale(spec, kind, path, key))


def _scale(spec: dict[str, Any], kind: str, path: Path, key: str) -> NumericScale | None:
    """`range: [lo, hi]`, optional `scale: linear|log` and `outside: clip|missing`."""
    given = [k for k in ("range", "scale", "outside") if k in spec]
    if kind != "numeric":
        if given:
            raise _fail(path, f"{key}.{given[0]}", f"declared only for numeric columns, not {kind}")
        return None
    if "range" not in spec:
        if given:
            raise _fail(path, f"{key}.range", f"needed with {given[0]}: the declared [lo, hi]")
        return None
    bounds = spec["range"]
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    ):
        raise _fail(path, f"{key}.range", f"expected [lo, hi] (two numbers), got {bounds!r}")
    kind_ = spec.get("scale", "linear")
    if kind_ not in SCALE_KINDS:
        raise _fail(path, f"{key}.scale", f"got {kind_!r}; allowed: {' | '.join(SCALE_KINDS)}")
    outside = spec.get("outside", "clip")
    if outside not in OUTSIDE_RULES:
        raise _fail(
            path, f"{key}.outside", f"got {outside!r}; allowed: {' | '.join(OUTSIDE_RULES)}"
        )
    try:
        return NumericScale(float(bounds[0]), float(bounds[1]), kind_, outside)
    except (ValueError, OverflowError):
        raise _fail(
            path, f"{key}.range", f"need finite lo < hi within +-1e15, got {bounds!r}"
        ) from None


def load_site_schema(schema_path: str | Path) -> SiteFileSchema:
    """Read and check a schema file; any problem names the schema file and the key."""
    path = Path(schema_path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - safe loader subclass
    except FileNotFoundError:
        raise DataError(f"schema file {path}: not found") from None
    except IsADirectoryError:
        raise DataError(f"schema file {path}: is a folder, not a schema file") from None
    except UnicodeDecodeError as err:
        raise DataError(
            f"schema file {path}: not UTF-8 text (byte offset {err.start}); save it as UTF-8"
        ) from None
    except OSError as err:
        raise DataError(f"schema file {path}: cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise DataError(f"schema file {path}: key '<document>': not valid YAML ({err})") from None
    data = _mapping(data, path, "<root>")
    _known(data, _TOP_KEYS, path, "")
    default = _policy(data.get("missing"), path, "missing", "error")
    raw_columns = data.get("columns")
    if not isinstance(raw_columns, dict) or not raw_columns:
        raise _fail(
            path, "columns", f"expected a non-empty mapping of column -> type, got {raw_columns!r}"
        )
    columns = tuple(_column(n, s, path, default) for n, s in raw_columns.items())
    target = _mapping(data.get("target"), path, "target")
    _known(target, _TARGET_KEYS, path, "target.")
    target_col = target.get("column")
    if not isinstance(target_col, str) or not target_col:
        raise _fail(path, "target.column", f"expected the target column's name, got {target_col!r}")
    if target_col in raw_columns:
        raise _fail(path, "target.column", f"{target_col!r} is also listed under columns")
    positive = _labels(target.get("positive"), path, "target.positive", required=True)
    if target.get("negative") is None:
        raise _fail(
            path,
            "target.negative",
            "required: list every label that means the negative class (an undeclared label "
            "would otherwise silently become class 0)",
        )
    negative = _labels(target.get("negative"), path, "target.negative", required=True)
    if set(positive) & set(negative):
        raise _fail(
            path,
            "target.negative",
            f"labels {sorted(set(positive) & set(negative))} are also positive",
        )
    target_missing = _policy(target.get("missing"), path, "target.missing", "error")
    if target_missing == "impute":
        raise _fail(path, "target.missing", "a label is never imputed; use error or drop_row")
    site_id = data.get("site_id")
    if site_id is not None and (
        not isinstance(site_id, str) or site_id in (*raw_columns, target_col)
    ):
        raise _fail(
            path,
            "site_id",
            f"expected a column name not used as feature or target, got {site_id!r}",
        )
    na_values = _labels(data.get("na_values", list(_DEFAULT_NA)), path, "na_values", required=True)
    unscaled = [c.name for c in columns if c.type == "numeric" and c.scale is None]
    if unscaled:
        logger.warning(
            "%s: numeric columns %s declare no range; encoded as asinh(x). Declare "
            "`range: [lo, hi]` for each so every site scales them alike",
            path,
            unscaled,
        )
    return SiteFileSchema(
        str(path), columns, target_col, positive, negative, target_missing, site_id, na_values
    )
