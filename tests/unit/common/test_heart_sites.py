"""The four real hospitals: sizes, label balance, seeded per-record splits, declared scaling."""

from __future__ import annotations

import numpy as np
import pytest

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data import dataset_info, load_site, load_sites, site_names
from fedsafe.common.errors import DataError

EXPECTED = {"cleveland": 303, "hungary": 294, "va_long_beach": 200, "switzerland": 123}


def test_four_real_hospitals_with_their_patient_counts() -> None:
    sites = load_sites(DatasetConfig())
    assert {s.site: s.n_train + len(s.y_test) for s in sites} == EXPECTED
    assert site_names(DatasetConfig()) == tuple(EXPECTED)


def test_the_split_is_strongly_non_iid() -> None:
    rates = {
        s.site: np.concatenate([s.y_train, s.y_test]).mean() for s in load_sites(DatasetConfig())
    }
    assert rates["hungary"] < 0.4 and rates["switzerland"] > 0.9


def test_held_out_split_is_seeded_and_near_the_configured_fraction() -> None:
    a = load_site(DatasetConfig(seed=1), 0)
    b = load_site(DatasetConfig(seed=1), 0)
    c = load_site(DatasetConfig(seed=2), 0)
    assert np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    # per-record hashing: the held-out count is Binomial(303, 0.2), sd 7
    assert abs(len(a.y_test) - 0.2 * 303) < 4 * 7
    assert abs(a.y_train.mean() - a.y_test.mean()) < 0.2


def test_features_match_the_public_schema_width() -> None:
    info = dataset_info("heart_disease")
    for site in load_sites(DatasetConfig()):
        assert site.x_train.shape[1] == info.n_features
        assert site.x_train.dtype == np.float32 and np.isfinite(site.x_train).all()


def test_numeric_features_are_scaled_by_the_declared_ranges_not_by_the_rows() -> None:
    site = load_site(DatasetConfig(), 1)  # Hungary
    numeric = site.x_train[:, :6]
    assert numeric.min() >= -1.0 and numeric.max() <= 1.0
    # age 18..100 maps linearly to -1..1: a 54-year-old is at (54 - 18) / 82 * 2 - 1
    ages = np.concatenate([site.x_train[:, 0], site.x_test[:, 0]])
    raw = (ages + 1) / 2 * 82 + 18
    assert np.allclose(raw, np.round(raw), atol=1e-3)  # whole years come back exactly
    assert not np.allclose(numeric.mean(axis=0), 0, atol=0.05)  # not centred on the site's rows


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet'; known datasets: \["):
        dataset_info("imagenet")


def test_site_index_out_of_range_is_an_error() -> None:
    with pytest.raises(DataError, match="site index 7 out of range"):
        load_site(DatasetConfig(), 7)
