"""The four real hospitals: sizes, label balance, seeded stratified splits, local preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from common.config import DatasetConfig
from common.data import dataset_info, load_site, load_sites, site_names
from common.errors import DataError

EXPECTED = {"cleveland": 304, "hungary": 293, "va_long_beach": 200, "switzerland": 123}


def test_four_real_hospitals_with_their_patient_counts() -> None:
    sites = load_sites(DatasetConfig())
    assert {s.site: s.n_train + len(s.y_test) for s in sites} == EXPECTED
    assert site_names(DatasetConfig()) == tuple(EXPECTED)


def test_the_split_is_strongly_non_iid() -> None:
    rates = {
        s.site: np.concatenate([s.y_train, s.y_test]).mean() for s in load_sites(DatasetConfig())
    }
    assert rates["hungary"] < 0.4 and rates["switzerland"] > 0.9


def test_held_out_split_is_stratified_and_seeded() -> None:
    a = load_site(DatasetConfig(seed=1), 0)
    b = load_site(DatasetConfig(seed=1), 0)
    c = load_site(DatasetConfig(seed=2), 0)
    assert np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    assert abs(a.y_train.mean() - a.y_test.mean()) < 0.03
    assert len(a.y_test) == round(0.2 * 304)


def test_features_match_the_public_schema_width() -> None:
    info = dataset_info("heart_disease")
    for site in load_sites(DatasetConfig()):
        assert site.x_train.shape[1] == info.n_features
        assert site.x_train.dtype == np.float32 and np.isfinite(site.x_train).all()


def test_scaling_is_fitted_on_the_sites_own_training_rows() -> None:
    site = load_site(DatasetConfig(), 1)
    numeric = site.x_train[:, :6]
    assert np.allclose(numeric.mean(axis=0), 0, atol=1e-5)
    observed = numeric.std(axis=0) > 0
    assert np.allclose(numeric.std(axis=0)[observed], 1, atol=1e-4)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet'; known datasets: \["):
        dataset_info("imagenet")


def test_site_index_out_of_range_is_an_error() -> None:
    with pytest.raises(DataError, match="site index 7 out of range"):
        load_site(DatasetConfig(), 7)
