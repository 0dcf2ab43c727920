"""A site's own CSV/Parquet file checked against its schema; serves simulation and deployment."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.base import DatasetInfo, SiteData
from fedsafe.common.data.preprocess import encode_tabular
from fedsafe.common.data.registry import register_dataset
from fedsafe.common.data.site_schema import SiteFileSchema, load_site_schema
from fedsafe.common.data.split import hash_split, record_hashes
from fedsafe.common.errors import DataError
from fedsafe.common.names import is_valid_name

__all__ = ["LoadedSiteFile", "load_site_file", "site_data_from_file", "site_file_names"]

logger = logging.getLogger("fedsafe.data")

# Beyond this a value is a sentinel or a typo, and scaling it would overflow to inf.
MAX_MAGNITUDE = 1e15
_BINARY = {
    "1": 1.0,
    "0": 0.0,
    "1.0": 1.0,
    "0.0": 0.0,
    "true": 1.0,
    "false": 0.0,
    "yes": 1.0,
    "no": 0.0,
}


@dataclass(frozen=True)
class LoadedSiteFile:
    """Validated rows of one site file.

    `frame` holds the feature columns (numeric/binary as float, categorical as str, missing
    as NaN/None where the policy is `impute`) and the target as int64 0/1; its index is the
    1-based data row number in the file, so any later message can still name the row.
    `dropped` counts rows removed under the missing-value policy, by reason.
    """

    path: str
    frame: pd.DataFrame
    schema: SiteFileSchema
    dropped: dict[str, int]
    site_id: str | None

    @property
    def y(self) -> np.ndarray:
        return self.frame[self.schema.target].to_numpy(dtype=np.int64)


def _error(path: Path, row: int | str, column: str, what: str) -> DataError:
    where = f"row {row}" if isinstance(row, int) else row
    return DataError(f"{path}: {where}, column '{column}': {what}")


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            records = list(csv.reader(handle))
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1 if isinstance(err.object, bytes) else "?"
        raise DataError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
            f"{err.start}); save the file as UTF-8"
        ) from None
    except csv.Error as err:  # e.g. a field over the CSV field size limit
        raise DataError(f"{path}: not a readable CSV file: {err}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the data file: {err}") from None
    if not records or not any(cell.strip() for cell in records[0]):
        raise _error(path, "header", "<none>", "empty file: no header row")
    return [h.strip() for h in records[0]], records[1:]


def _read_parquet(path: Path) -> tuple[list[str], list[list[Any]]]:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise _error(path, "header", "<none>", "empty file: no header row")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise _error(path, "header", "<none>", f"not a readable Parquet file ({err})") from None
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(table.column_names), [list(r) for r in zip(*columns, strict=True)]


def _check_header(path: Path, header: list[str], schema: SiteFileSchema) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise _error(
                path, "header", name, f"duplicated header (columns {seen[name]} and {position})"
            )
        seen[name] = position
    for name in schema.expected_columns:
        if name not in seen:
            raise _error(
                path, "header", name, f"missing column declared in schema file {schema.path}"
            )
    for name in header:
        if name not in schema.expected_columns:
            raise _error(
                path,
                "header",
                name,
                f"unexpected column, not declared in schema file {schema.path}",
            )


def _frame(path: Path, header: list[str], records: list[list[Any]]) -> tuple[pd.DataFrame, int]:
    rows, numbers, blank = [], [], 0
    for number, record in enumerate(records, start=1):
        if not record:  # a blank line carries no data; counted, not silently skipped
            blank += 1
            continue
        if len(record) != len(header):
            column = header[len(record)] if len(record) < len(header) else "<extra field>"
            raise _error(
                path, number, column, f"row has {len(record)} fields, header has {len(header)}"
            )
        rows.append(record)
        numbers.append(number)
    if not rows:
        raise _error(path, 1, header[0], "empty file: a header but no data rows")
    frame = pd.DataFrame(rows, columns=header, index=pd.Index(numbers, name="row"), dtype=object)
    return frame.map(lambda v: v.strip() if isinstance(v, str) else v), blank


def _first(path: Path, column: str, bad: pd.Series, values: pd.Series, what: str) -> None:
    if bool(bad.any()):
        row = int(bad.idxmax())
        raise _error(path, row, column, f"{values[row]!r} {what}")


def _typed(
    path: Path, frame: pd.DataFrame, schema: SiteFileSchema, missing: pd.DataFrame
) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for spec in schema.columns:
        raw, absent = frame[spec.name], missing[spec.name]
        present = raw.where(~absent)
        if spec.type == "numeric":
            parsed = pd.to_numeric(present, errors="coerce")
            _first(
                path,
                spec.name,
                ~absent & parsed.isna(),
                raw,
                "is not a number (column type: numeric)",
            )
            huge = ~absent & ~(parsed.abs() <= MAX_MAGNITUDE)  # inf, -inf, 1e308, overflow
            _first(
                path,
                spec.name,
                huge,
                raw,
                f"is not a finite number within +-{MAX_MAGNITUDE:g} (column type: numeric)",
            )
            out[spec.name] = parsed.astype(np.float64)
        elif spec.type == "binary":
            parsed = present.map(lambda v: _BINARY.get(str(v).lower()), na_action="ignore")
            _first(
                path,
                spec.name,
                ~absent & parsed.isna(),
                raw,
                f"is not binary (allowed: {sorted(_BINARY)})",
            )
            out[spec.name] = parsed.astype(np.float64)
        else:
            text = present.map(str, na_action="ignore")
            _first(
                path,
                spec.name,
                ~absent & ~text.isin(spec.levels),
                raw,
                f"is an unknown category (declared levels: {list(spec.levels)})",
            )
            out[spec.name] = text.astype(object).where(~absent, None)
    label = frame[schema.target].where(~missing[schema.target]).map(str, na_action="ignore")
    # Every label must be declared: an undeclared one (a typo, `1.0` for `1`) must never
    # silently become class 0.
    unknown = ~missing[schema.target] & ~label.isin((*schema.positive, *schema.negative))
    allowed = [*schema.positive, *schema.negative]
    _first(
        path,
        schema.target,
        unknown,
        frame[schema.target],
        f"is an undeclared target label (declared: {allowed}; a label is compared as "
        f"written, so '1.0' is not '1': declare it in target.positive or target.negative "
        f"of {schema.path})",
    )
    out[schema.target] = label.isin(schema.positive).astype(np.int64)
    return out


def _apply_missing(
    path: Path, schema: SiteFileSchema, missing: pd.DataFrame
) -> tuple[pd.Series, dict[str, int]]:
    policies = [(c.name, c.missing) for c in schema.columns] + [
        (schema.target, schema.target_missing)
    ]
    drop = pd.Series(False, index=missing.index)
    dropped: dict[str, int] = {}
    for column, policy in policies:
        absent = missing[column]
        if not bool(absent.any()) or policy == "impute":
            continue
        if policy == "error":
            what = "missing target label" if column == schema.target else "missing value"
            raise _error(
                path,
                int(absent.idxmax()),
                column,
                f"{what} (missing policy 'error'; to allow it, set `missing: drop_row` or `impute` "
                f"for this column in {schema.path})",
            )
        new = absent & ~drop
        if bool(new.any()):
            dropped[f"missing value in '{column}'"] = int(new.sum())
        drop |= absent
    return drop, dropped


def _site_id(
    path: Path, frame: pd.DataFrame, column: str | None, missing: pd.DataFrame
) -> str | None:
    if column is None:
        return None
    _first(path, column, missing[column], frame[column], "is a missing site id")
    values = frame[column].map(str)
    _first(
        path,
        column,
        values != values.iloc[0],
        frame[column],
        f"differs from the file's site id {values.iloc[0]!r}",
    )
    return str(values.iloc[0])


def load_site_file(data_path: str | Path, schema_path: str | Path) -> LoadedSiteFile:
    """Read a site's CSV/Parquet file and check every cell against the schema file.

    Every problem raises a DataError naming the file, the 1-based data row (header
    excluded) and the column. Rows removed under a `drop_row` policy (and blank lines)
    are counted by reason, returned and logged at WARNING: never silently lost.
    """
    path = Path(data_path)
    schema = load_site_schema(schema_path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, records = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        header, records = _read_parquet(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    _check_header(path, header, schema)
    raw, blank = _frame(path, header, records)
    missing = raw.isna() | raw.isin(schema.na_values)
    site_id = _site_id(path, raw, schema.site_id, missing)
    typed = _typed(path, raw, schema, missing)
    drop, dropped = _apply_missing(path, schema, missing)
    if blank:
        dropped = {"blank line": blank, **dropped}
    if dropped:
        reasons = ", ".join(f"{k}: {v}" for k, v in dropped.items())
        total = sum(dropped.values())
        logger.warning("%s: dropped %d of %d data rows: %s", path, total, len(raw) + blank, reasons)
    kept = typed[~drop]
    if kept.empty:
        raise _error(
            path,
            int(raw.index[0]),
            schema.target,
            "every data row was dropped by the missing-value policy",
        )
    return LoadedSiteFile(str(path), kept, schema, dropped, site_id)


def site_data_from_file(
    data_path: str | Path,
    schema_path: str | Path,
    *,
    test_fraction: float = 0.2,
    seed: int = 42,
    salt: int = 0,
    site: str | None = None,
    split_key: bytes | None = None,
) -> SiteData:
    """A site's train/held-out arrays from its own file: split per record, encode by the schema.

    The same function serves a simulated site (`site_files` data set) and a deployed one.
    The site is named `site`, else the file's site id, else the file name's stem.
    """
    loaded = load_site_file(data_path, schema_path)
    y = loaded.y
    _check_classes(loaded)
    frame = loaded.frame.reset_index(drop=True)
    name = site or loaded.site_id or _site_name(Path(data_path))
    train, test = hash_split(
        record_hashes(frame, y),
        test_fraction=test_fraction,
        seed=seed + salt,
        key=split_key,
        site=str(data_path),
    )
    tabular = loaded.schema.tabular
    x_train, x_test = encode_tabular(frame, tabular, train, test)
    if not is_valid_name(name):
        raise DataError(f"{data_path}: site id {name!r} is not a valid site name")
    # The budget's identity is the raw rows, independent of the run's split and encoding.
    return SiteData(
        name, x_train, y[train], x_test, y[test], record_hashes(frame, y), tabular.feature_names
    )


def _check_classes(loaded: LoadedSiteFile) -> None:
    """A site needs both classes, twice each, to train and hold some out; else say so."""
    counts = np.bincount(loaded.y, minlength=2)
    if counts.min() < 2:
        raise DataError(
            f"{loaded.path}: column '{loaded.schema.target}': {int(counts[1])} positive and "
            f"{int(counts[0])} negative rows after the missing-value policy; a site needs at "
            "least 2 rows of each class to train and to hold rows out"
        )


def site_file_names(cfg: DatasetConfig) -> tuple[str, ...]:
    """One simulated site per configured file, named by the file's stem (no rows read).

    The stem must be a valid name (``common.names``): `...csv` must not become site `..`.
    """
    if not cfg.files:
        raise DataError("dataset 'site_files' needs dataset.files (one data file per site)")
    names = tuple(_site_name(Path(f)) for f in cfg.files)
    if len(set(names)) != len(names):
        raise DataError(
            f"dataset.files: site names from file stems must be distinct, got {list(names)}"
        )
    return names


def _site_name(path: Path) -> str:
    if not is_valid_name(path.stem):
        raise DataError(
            f"dataset.files: {path}: the site name would be {path.stem!r}, which is not a valid "
            "name (1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            "no '..'); rename the file"
        )
    return path.stem


def _info(cfg: DatasetConfig | None) -> DatasetInfo:
    if cfg is None or cfg.schema is None:
        raise DataError(
            "dataset 'site_files': its shape comes from the schema; "
            "pass the DatasetConfig with dataset.schema set"
        )
    schema = load_site_schema(cfg.schema)
    return DatasetInfo(
        "site_files",
        schema.tabular.n_features,
        2,
        site_file_names(cfg) if cfg.files else (),
        f"sites' own files checked against {cfg.schema}",
    )


def _load(cfg: DatasetConfig, index: int, site: str) -> SiteData:
    if cfg.schema is None:
        raise DataError("dataset 'site_files' needs dataset.schema (the shared schema file)")
    return site_data_from_file(
        cfg.files[index],
        cfg.schema,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        salt=index,
        site=site,
    )


register_dataset("site_files", info=_info, load=_load, sites=site_file_names)
