"""Image data sets: 8x8 digits from scikit-learn, Fashion-MNIST from local idx files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data import dataset_info, load_sites
from fedsafe.common.data.idx import read_idx
from fedsafe.common.data.images import (
    FASHION_MNIST_DIR,
    digits_arrays,
    fashion_mnist_arrays,
    fashion_mnist_dir,
)
from fedsafe.common.errors import DataError


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def test_digits_sites_hold_all_1797_images_scaled_to_unit_range() -> None:
    # Arrange
    cfg = DatasetConfig(name="digits", partition="dirichlet", num_sites=4, alpha=0.5, seed=0)

    # Act
    sites = load_sites(cfg)
    info = dataset_info("digits")

    # Assert
    assert info.input_shape == (1, 8, 8) and info.n_features == 64 and info.n_classes == 10
    assert sum(len(s.y_train) + len(s.y_test) for s in sites) == 1797
    for site in sites:
        assert site.x_train.shape[1:] == (1, 8, 8) and site.x_train.dtype == np.float32
        assert site.x_train.min() >= 0.0 and site.x_train.max() <= 1.0
    labels = np.concatenate([np.concatenate([s.y_train, s.y_test]) for s in sites])
    assert np.array_equal(np.bincount(labels), np.bincount(digits_arrays()[1]))


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_plain_and_gzipped(tmp_path: Path, gz: bool) -> None:
    # Arrange
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = _idx_bytes(array)
    path = tmp_path / ("a-idx3-ubyte.gz" if gz else "a-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if gz else data)

    # Act
    back = read_idx(path)

    # Assert
    assert np.array_equal(back, array)


def test_read_idx_rejects_a_truncated_file_naming_it(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "cut-idx1-ubyte"
    path.write_bytes(_idx_bytes(np.arange(10, dtype=np.uint8))[:-3])

    # Act / Assert
    with pytest.raises(DataError, match="cut-idx1-ubyte"):
        read_idx(path)


def test_missing_fashion_mnist_files_say_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    monkeypatch.setenv("FEDSAFE_FASHION_MNIST_DIR", str(tmp_path))
    fashion_mnist_arrays.cache_clear()

    # Act / Assert
    try:
        with pytest.raises(DataError) as err:
            fashion_mnist_arrays()
    finally:
        fashion_mnist_arrays.cache_clear()
    message = str(err.value)
    assert "make fashion-mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path) in message


_FMNIST_PRESENT = (fashion_mnist_dir() / "train-images-idx3-ubyte.gz").is_file() or (
    fashion_mnist_dir() / "train-images-idx3-ubyte"
).is_file()


@pytest.mark.skipif(
    not _FMNIST_PRESENT,
    reason=f"Fashion-MNIST idx files not in {FASHION_MNIST_DIR} "
    "(make fashion-mnist, or apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_loads_70000_balanced_images_into_sites() -> None:
    # Arrange
    cfg = DatasetConfig(name="fashion_mnist", partition="dirichlet", num_sites=10, seed=0)

    # Act
    x, y = fashion_mnist_arrays()
    sites = load_sites(cfg)

    # Assert
    assert x.shape == (70000, 1, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(np.bincount(y), np.full(10, 7000))
    assert sum(len(s.y_train) + len(s.y_test) for s in sites) == 70000
    assert all(s.x_train.shape[1:] == dataset_info("fashion_mnist").input_shape for s in sites)
    assert max(s.x_train.max() for s in sites) <= 1.0
