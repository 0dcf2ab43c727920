"""Scattering features: the published shape and invariances, a function of each image alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsafe.common.config import DatasetConfig, ModelConfig
from fedsafe.common.data.images import digits_arrays
from fedsafe.common.data.registry import dataset_info
from fedsafe.common.data.scattering import _filters, _padded_size, scatter, scattering_channels
from fedsafe.common.data.sites import load_site
from fedsafe.common.errors import ConfigError
from fedsafe.common.models import model_for


def _digits(n: int) -> np.ndarray:
    x, _ = digits_arrays()
    return (x[:n] / 16.0).astype(np.float32)


def test_j2_l8_gives_81_channels_at_a_quarter_of_the_side() -> None:
    assert scattering_channels(2, 8) == 81
    assert scatter(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 81, 7, 7)
    assert scatter(_digits(5)).shape == (5, 81, 2, 2)


def test_wavelets_have_zero_mean_and_the_low_pass_keeps_the_mean() -> None:
    psi, phi = _filters(_padded_size(28, 2), 2, 8)
    assert torch.allclose(psi[..., 0, 0], torch.zeros(2, 8), atol=1e-5)
    assert phi[0, 0].item() == pytest.approx(1.0, abs=1e-4)
    # a constant image: order 0 is the constant, every wavelet coefficient (nearly) zero
    out = scatter(np.full((1, 1, 28, 28), 0.5, np.float32))
    assert np.allclose(out[0, 0], 0.5, atol=1e-4)
    assert np.abs(out[0, 1:]).max() < 1e-3


def test_each_image_is_transformed_alone() -> None:
    """No batch statistic enters the features: computing them leaks nothing between records."""
    x = _digits(40)
    together = scatter(x)
    alone = np.concatenate([scatter(x[i : i + 1]) for i in range(len(x))])
    assert np.allclose(together, alone, atol=1e-5)
    changed = x.copy()
    changed[0] = 1.0 - changed[0]
    assert np.allclose(scatter(changed)[1:], together[1:], atol=1e-5)


def test_a_one_pixel_shift_moves_the_features_far_less_than_another_image() -> None:
    """Near-invariance to small translations: why a linear model on them generalises."""
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[0, 0, 8:20, 10:16] = 1.0
    x[1, 0, 9:21, 10:16] = 1.0  # the same bar, one pixel lower
    other = np.zeros((1, 1, 28, 28), np.float32)
    other[0, 0, 12:16, 4:24] = 1.0  # a horizontal bar
    feats = scatter(np.concatenate([x, other]))
    shift = np.linalg.norm(feats[0] - feats[1])
    different = np.linalg.norm(feats[0] - feats[2])
    assert shift < 0.35 * different


def test_the_scatter_linear_model_takes_scattering_features_only() -> None:
    cfg = DatasetConfig(name="digits", partition="iid", features="scattering")
    info = dataset_info("digits", cfg)
    assert info.input_shape == (81, 2, 2)
    model = model_for(ModelConfig(name="scatter_linear"), info)
    assert model(torch.from_numpy(scatter(_digits(4)))).shape == (4, 10)
    with pytest.raises(ConfigError, match="scatter_linear"):
        model_for(ModelConfig(name="scatter_linear"), dataset_info("digits", None))


def test_scattering_is_refused_for_tabular_data() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.features"):
        DatasetConfig(name="heart_disease", features="scattering")


def test_switching_to_scattering_features_keeps_the_images_budget_identity() -> None:
    """As a site (or a coordinator's config) re-encoding the same images: same records, so the
    same fingerprint and overlap hashes, never a fresh budget for a new encoding."""
    pixels = load_site(DatasetConfig(name="digits", partition="iid"), 0)
    scattered = load_site(DatasetConfig(name="digits", partition="iid", features="scattering"), 0)
    assert scattered.x_train.shape[1:] == (81, 2, 2)
    assert scattered.fingerprint == pixels.fingerprint
    assert np.array_equal(np.sort(scattered.overlap_hashes), np.sort(pixels.overlap_hashes))
