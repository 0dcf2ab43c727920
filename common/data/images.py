"""Image data sets (8x8 digits, Fashion-MNIST) read from local files, split into simulated sites."""

from __future__ import annotations

import dataclasses
import math
import os
from functools import cache
from pathlib import Path

import numpy as np

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.base import DatasetInfo, SiteData, partition_rows, split_arrays
from fedsafe.common.data.idx import read_idx
from fedsafe.common.data.registry import register_dataset
from fedsafe.common.data.scattering import SCATTER_J, scatter, scattering_channels
from fedsafe.common.errors import DataError

__all__ = ["FASHION_MNIST_DIR", "fashion_mnist_dir", "digits_arrays", "fashion_mnist_arrays"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_ENV = "FEDSAFE_FASHION_MNIST_DIR"
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def fashion_mnist_dir() -> Path:
    """Where the idx files are: $FEDSAFE_FASHION_MNIST_DIR, else the Debian package's folder."""
    return Path(os.environ.get(_FMNIST_ENV, FASHION_MNIST_DIR))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"Fashion-MNIST file {stem}[.gz] not found in {folder}. Get the files offline with "
        "`make fashion-mnist` or `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu "
        f"package, installs {FASHION_MNIST_DIR}), or point ${_FMNIST_ENV} at a folder holding "
        "the four MNIST-format idx files"
    )


@cache
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1797 x 1 x 8 x 8, pixel values 0..16) as uint8 and labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.uint8)[:, None, :, :], bunch.target.astype(np.int64)


@cache
def fashion_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images (train then t10k) as N x 1 x 28 x 28 uint8, and labels.

    The two official files are pooled: the federation draws each site's held-out rows from
    its own share, like every other data set here.
    """
    folder = fashion_mnist_dir()
    images, labels = [], []
    for image_stem, label_stem in _FMNIST_FILES.values():
        x = read_idx(_find(folder, image_stem))
        y = read_idx(_find(folder, label_stem))
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
            raise DataError(f"{folder}: {image_stem} has shape {x.shape}, labels {y.shape}")
        images.append(x[:, None, :, :])
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _image_site(
    x_all: np.ndarray, y_all: np.ndarray, scale: float, cfg: DatasetConfig, index: int, site: str
) -> SiteData:
    """Scale pixels by a fixed constant; no per-site standardisation.

    Pixel ranges are known in advance (0..16, 0..255), so a fixed scale puts every site in
    the same feature space without fitting anything on its rows; GroupNorm in the CNN does
    the rest. Nothing site-specific is computed, so nothing can leak.
    """
    part = partition_rows(y_all, cfg)[index]
    x, y = x_all[part], y_all[part]
    train, test = split_arrays(x, y, cfg, index, site)
    x_train = (x[train].astype(np.float32) / scale).astype(np.float32)
    x_test = (x[test].astype(np.float32) / scale).astype(np.float32)
    pixels = SiteData(site, x_train, y[train], x_test, y[test])
    if cfg.features == "pixels":
        return pixels
    # The records are the images, whatever features training sees: their fingerprint and
    # overlap hashes stay the pixels', so switching features cannot open a fresh budget.
    return dataclasses.replace(
        pixels,
        x_train=scatter(x_train),
        x_test=scatter(x_test),
        raw_hashes=pixels.record_hashes,
        pre_feature_hashes=pixels.overlap_hashes,
    )


def _shape(cfg: DatasetConfig | None, side: int) -> tuple[int, int, int]:
    """One example as the model sees it: pixels, or scattering channels at side / 2**J."""
    if cfg is not None and cfg.features == "scattering":
        return (scattering_channels(), side // 2**SCATTER_J, side // 2**SCATTER_J)
    return (1, side, side)


def _image_info(name: str, side: int, description: str, cfg: DatasetConfig | None) -> DatasetInfo:
    shape = _shape(cfg, side)
    return DatasetInfo(name, math.prod(shape), 10, (), description, shape)


def _digits_info(cfg: DatasetConfig | None) -> DatasetInfo:
    return _image_info("digits", 8, "scikit-learn 8x8 digits: 1,797 images, 10 classes", cfg)


def _digits_load(cfg: DatasetConfig, index: int, site: str) -> SiteData:
    x, y = digits_arrays()
    return _image_site(x, y, 16.0, cfg, index, site)


def _fmnist_info(cfg: DatasetConfig | None) -> DatasetInfo:
    return _image_info(
        "fashion_mnist",
        28,
        "Fashion-MNIST (Zalando): 70,000 28x28 grey images, 10 classes, from local idx files",
        cfg,
    )


def _fmnist_load(cfg: DatasetConfig, index: int, site: str) -> SiteData:
    x, y = fashion_mnist_arrays()
    return _image_site(x, y, 255.0, cfg, index, site)


register_dataset("digits", info=_digits_info, load=_digits_load)
register_dataset("fashion_mnist", info=_fmnist_info, load=_fmnist_load)
