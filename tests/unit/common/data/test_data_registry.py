"""The data set registry: names match the config schema, unknown names list the known ones."""

from __future__ import annotations

import pytest

from fedsafe.common.config import DATASETS as CONFIG_DATASETS
from fedsafe.common.config import DatasetConfig
from fedsafe.common.data import DATASETS, DatasetInfo, dataset_info, load_site
from fedsafe.common.errors import ConfigError, DataError


def test_registry_names_match_the_config_schema() -> None:
    # Arrange / Act / Assert
    assert set(DATASETS) == set(CONFIG_DATASETS)


def test_unknown_dataset_lists_the_known_ones() -> None:
    # Arrange / Act / Assert
    with pytest.raises(DataError, match="known datasets: .*lending_club"):
        dataset_info("mnist")


def test_tabular_info_has_a_flat_input_shape() -> None:
    # Arrange / Act
    info = dataset_info("credit_data")

    # Assert
    assert info.input_shape == (info.n_features,)


def test_input_shape_must_hold_n_features() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match="input_shape"):
        DatasetInfo("x", 63, 10, (), "bad", (1, 8, 8))


def test_site_index_out_of_range_is_a_data_error() -> None:
    # Arrange
    cfg = DatasetConfig(name="digits", partition="iid", num_sites=2)

    # Act / Assert
    with pytest.raises(DataError, match="out of range"):
        load_site(cfg, 2)


def test_site_files_config_needs_files_and_schema() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ConfigError, match="dataset.files"):
        DatasetConfig(name="site_files")
    with pytest.raises(ConfigError, match="dataset.schema"):
        DatasetConfig(name="site_files", files=("a.csv",))


def test_site_files_info_without_config_explains_why() -> None:
    # Arrange / Act / Assert
    with pytest.raises(DataError, match="schema"):
        dataset_info("site_files")
