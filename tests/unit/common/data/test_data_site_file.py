"""A site's own file: every schema violation names file, row and column; drops are counted."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data import (
    dataset_info,
    load_site_file,
    load_sites,
    site_data_from_file,
    site_names,
)
from fedsafe.common.errors import DataError

SCHEMA = """\
# a bank's loan file
target:
  column: default
  positive: [yes]
  negative: [no]
site_id: branch
missing: error
columns:
  age: {type: numeric}
  income: {type: numeric, missing: impute}
  home: {type: categorical, levels: [rent, own, mortgage], missing: drop_row}
  has_card: binary
"""
HEADER = "age,income,home,has_card,default,branch"
ROWS = [
    "34,52000,rent,1,no,north",
    "51,,own,0,yes,north",
    "29,31000,mortgage,true,no,north",
    "45,61000,rent,no,yes,north",
    "38,47000,own,1,no,north",
    "62,39000,mortgage,0,yes,north",
    "27,28000,rent,1,no,north",
    "44,58000,own,0,no,north",
    "33,41000,rent,1,yes,north",
    "58,72000,mortgage,0,no,north",
]


def _write(
    tmp_path: Path,
    rows: list[str],
    header: str = HEADER,
    schema: str = SCHEMA,
    name: str = "north.csv",
):
    data = tmp_path / name
    data.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    schema_path = tmp_path / "schema.yaml"
    schema_path.write_text(schema, encoding="utf-8")
    return data, schema_path


def _error(data: Path, schema: Path) -> str:
    with pytest.raises(DataError) as err:
        load_site_file(data, schema)
    return str(err.value)


# --------------------------------------------------------------------------- happy paths


def test_valid_file_loads_typed_rows_target_and_site_id(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, ROWS)

    # Act
    loaded = load_site_file(data, schema)

    # Assert
    assert len(loaded.frame) == 10 and loaded.dropped == {}
    assert loaded.site_id == "north"
    assert loaded.y.tolist() == [0, 1, 0, 1, 0, 1, 0, 0, 1, 0]
    assert math.isnan(loaded.frame.loc[2, "income"])  # imputed later, per site
    assert loaded.frame["has_card"].tolist()[:4] == [1.0, 0.0, 1.0, 0.0]
    assert "branch" not in loaded.frame.columns


def test_parquet_file_loads_like_csv(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, ROWS)
    parquet = tmp_path / "north.parquet"
    pd.read_csv(data, dtype=str).to_parquet(parquet)

    # Act
    from_csv, from_parquet = load_site_file(data, schema), load_site_file(parquet, schema)

    # Assert
    pd.testing.assert_frame_equal(from_csv.frame, from_parquet.frame)


def test_dropped_rows_are_counted_returned_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Arrange
    rows = [*ROWS, "40,50000,,1,no,north", "41,50000,NA,0,yes,north", ""]
    rows.append("42,50000,own,1,no,north")
    data, schema = _write(tmp_path, rows)

    # Act
    with caplog.at_level(logging.WARNING, logger="fedsafe.data"):
        loaded = load_site_file(data, schema)

    # Assert
    assert loaded.dropped == {"blank line": 1, "missing value in 'home'": 2}
    assert len(loaded.frame) == 11
    assert list(loaded.frame.index[-1:]) == [14]  # original 1-based row numbers kept
    assert "dropped 3 of 14 data rows" in caplog.text and "north.csv" in caplog.text


def test_yes_no_levels_stay_strings_in_the_schema(tmp_path: Path) -> None:
    # Arrange: YAML 1.1 would read `yes`/`no` as booleans
    data, schema = _write(tmp_path, ROWS)

    # Act
    loaded = load_site_file(data, schema)

    # Assert
    assert loaded.schema.positive == ("yes",) and loaded.schema.negative == ("no",)


def test_site_data_from_file_splits_and_encodes_on_own_rows(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, ROWS * 3)

    # Act
    site = site_data_from_file(data, schema, test_fraction=0.2, seed=1)

    # Assert
    assert site.site == "north"  # from the site id column
    assert len(site.y_train) + len(site.y_test) == 30
    assert site.x_train.shape[1] == 3 * 2 + 3  # numeric+binary with missing flags, 3 levels
    assert site.x_train.dtype == np.float32 and not np.isnan(site.x_train).any()


def test_site_files_dataset_serves_a_simulation(tmp_path: Path) -> None:
    # Arrange
    north, schema = _write(tmp_path, ROWS * 2, name="north.csv")
    south, _ = _write(tmp_path, [r.replace("north", "south") for r in ROWS * 2], name="south.csv")
    cfg = DatasetConfig(name="site_files", files=(str(north), str(south)), schema=str(schema))

    # Act
    sites = load_sites(cfg)
    info = dataset_info("site_files", cfg)

    # Assert
    assert site_names(cfg) == ("north", "south")
    assert [s.site for s in sites] == ["north", "south"]
    assert all(s.x_train.shape[1] == info.n_features == 9 for s in sites)


# --------------------------------------------------------------------------- one test per error


def test_non_number_in_numeric_column_names_file_row_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [ROWS[0], "fifty,52000,rent,1,no,north"])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 2" in message and "column 'age'" in message
    assert "'fifty' is not a number" in message


def test_unknown_category_names_file_row_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [*ROWS[:2], "30,40000,castle,1,no,north"])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 3" in message and "column 'home'" in message
    assert "'castle' is an unknown category" in message


def test_unknown_target_label_names_file_row_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [ROWS[0], "30,40000,own,1,maybe,north"])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 2" in message and "column 'default'" in message


def test_bad_binary_value_names_file_row_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [ROWS[0], ROWS[1], ROWS[2], "30,40000,own,2,no,north"])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 4" in message and "column 'has_card'" in message


def test_missing_target_names_file_row_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [*ROWS[:4], "30,40000,own,1,,north"])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 5" in message and "column 'default'" in message
    assert "missing target label" in message


def test_missing_value_under_error_policy_names_file_row_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [ROWS[0], ",40000,own,1,no,north"])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 2" in message and "column 'age'" in message
    assert "missing value" in message


def test_zero_byte_file_is_an_empty_file_error(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [])
    data.write_bytes(b"")

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "empty file" in message


def test_header_only_file_is_an_empty_file_error(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 1" in message and "column 'age'" in message
    assert "no data rows" in message


def test_duplicated_header_names_file_and_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [ROWS[0] + ",35"], header=HEADER + ",age")

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "header" in message and "column 'age'" in message
    assert "duplicated header (columns 1 and 7)" in message


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    # Arrange
    header = HEADER.replace("income,", "")
    data, schema = _write(
        tmp_path, [r.split(",", 2)[0] + "," + r.split(",", 2)[2] for r in ROWS], header=header
    )

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "header" in message and "column 'income'" in message
    assert "missing column" in message and "schema.yaml" in message


def test_unexpected_column_names_file_and_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [r + ",x" for r in ROWS], header=HEADER + ",zip")

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "header" in message and "column 'zip'" in message
    assert "unexpected column" in message


def test_row_with_too_few_fields_names_file_row_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [ROWS[0], ROWS[1], "30,40000,own"])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 3" in message and "column 'has_card'" in message


def test_second_site_id_in_one_file_names_file_row_column(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, [ROWS[0], ROWS[1].replace("north", "south")])

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.csv" in message and "row 2" in message and "column 'branch'" in message


@pytest.mark.parametrize(
    ("schema", "key"),
    [
        (SCHEMA.replace("{type: numeric}", "{type: numbr}"), "columns.age.type"),
        (
            SCHEMA.replace(
                "{type: categorical, levels: [rent, own, mortgage], missing: drop_row}",
                "categorical",
            ),
            "columns.home.levels",
        ),
        (SCHEMA.replace("missing: error", "missing: skip"), "missing"),
        (SCHEMA.replace("site_id: branch", "site_id: branch\ncolour: red"), "colour"),
        (SCHEMA.replace("  positive: [yes]\n", ""), "target.positive"),
        ("columns: [age, income\n", "<document>"),
    ],
)
def test_malformed_schema_file_names_schema_file_and_key(
    tmp_path: Path, schema: str, key: str
) -> None:
    # Arrange
    data, schema_path = _write(tmp_path, ROWS, schema=schema)

    # Act
    message = _error(data, schema_path)

    # Assert
    assert "schema.yaml" in message and f"key '{key}'" in message


def test_unsupported_extension_names_the_file(tmp_path: Path) -> None:
    # Arrange
    data, schema = _write(tmp_path, ROWS, name="north.xlsx")

    # Act
    message = _error(data, schema)

    # Assert
    assert "north.xlsx" in message and ".csv or .parquet" in message


# --------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e308", "1e400", "NaN1", "Infinity"])
def test_non_finite_or_huge_number_names_file_row_column(tmp_path: Path, value: str) -> None:
    rows = list(ROWS)
    rows[3] = f"{value},61000,rent,no,yes,north"
    data, schema = _write(tmp_path, rows)

    message = _error(data, schema)

    assert str(data) in message and "row 4" in message and "'age'" in message
    assert repr(value) in message


def test_non_utf8_bytes_in_data_name_the_file(tmp_path: Path) -> None:
    data, schema = _write(tmp_path, ROWS)
    data.write_bytes(data.read_bytes().replace(b"rent", b"r\xe9nt", 1))

    message = _error(data, schema)

    assert str(data) in message and "not UTF-8" in message and "line 2" in message


def test_non_utf8_schema_and_folder_schema_name_the_schema(tmp_path: Path) -> None:
    data, schema = _write(tmp_path, ROWS)
    schema.write_bytes(SCHEMA.encode("utf-8") + b"# caf\xe9\n")
    assert "not UTF-8" in _error(data, schema) and str(schema) in _error(data, schema)

    folder = tmp_path / "schema-folder"
    folder.mkdir()
    assert f"schema file {folder}: is a folder" in _error(data, folder)


def test_field_over_the_csv_limit_names_the_file(tmp_path: Path) -> None:
    data, schema = _write(tmp_path, ROWS)
    with data.open("a", encoding="utf-8") as handle:
        handle.write('1,"' + "x" * 200_000 + '",rent,1,no,north\n')

    message = _error(data, schema)

    assert str(data) in message and "field larger than field limit" in message


def test_label_spelled_1_point_0_is_not_silently_negative(tmp_path: Path) -> None:
    schema_text = SCHEMA.replace("positive: [yes]", "positive: ['1']").replace(
        "negative: [no]", "negative: ['0']"
    )
    rows = [r.replace(",yes,", ",1,").replace(",no,", ",0,") for r in ROWS]
    rows[2] = rows[2].replace(",0,north", ",0.0,north")
    data, schema = _write(tmp_path, rows, schema=schema_text)

    message = _error(data, schema)

    assert "row 3" in message and "'0.0' is an undeclared target label" in message


def test_schema_without_negative_labels_is_refused(tmp_path: Path) -> None:
    data, schema = _write(tmp_path, ROWS, schema=SCHEMA.replace("  negative: [no]\n", ""))

    message = _error(data, schema)

    assert "target.negative" in message and "silently become class 0" in message


@pytest.mark.parametrize("rows", [ROWS[:1], [r.replace(",yes,", ",no,") for r in ROWS]])
def test_one_row_or_single_class_file_is_refused_with_counts(
    tmp_path: Path, rows: list[str]
) -> None:
    data, schema = _write(tmp_path, rows)

    with pytest.raises(DataError, match="a site needs at least 2 rows of each class") as err:
        site_data_from_file(data, schema)

    assert str(data) in str(err.value) and "'default'" in str(err.value)


def test_a_file_named_dot_dot_dot_csv_does_not_become_site_dot_dot(tmp_path: Path) -> None:
    data, schema = _write(tmp_path, ROWS, name="...csv")
    cfg = DatasetConfig(name="site_files", files=(str(data),), schema=str(schema))

    with pytest.raises(DataError, match=r"the site name would be '\.\.'"):
        site_names(cfg)
