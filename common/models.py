"""Models by registry name; every one is valid under Opacus (GroupNorm, never BatchNorm)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fedsafe.common.config import ModelConfig
from fedsafe.common.data.base import DatasetInfo
from fedsafe.common.errors import ConfigError

__all__ = ["model_for", "MODELS", "build_model"]

Factory = Callable[[int, int, int, tuple[int, ...]], nn.Module]


class _Flat(nn.Sequential):
    """A Sequential that flattens each example first (images into vectors).

    Flattening in `forward` rather than with an `nn.Flatten` layer keeps parameter names
    ("0.weight", ...) identical for tabular and image inputs.
    """

    flattens_input = True  # the fused DP step reads this: flatten, then the layers in order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def _logreg(
    n_features: int, n_classes: int, hidden: int, input_shape: tuple[int, ...]
) -> nn.Module:
    return _Flat(nn.Linear(n_features, n_classes))


def _mlp(n_features: int, n_classes: int, hidden: int, input_shape: tuple[int, ...]) -> nn.Module:
    return _Flat(
        nn.Linear(n_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


def _cnn(n_features: int, n_classes: int, hidden: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Two conv blocks; GroupNorm keeps statistics per example, as DP-SGD's clipping needs."""
    if len(input_shape) != 3:
        raise ConfigError(
            "model.name",
            "cnn",
            f"a tabular model (logreg, mlp): cnn needs a (C, H, W) input, got {input_shape}",
        )
    channels, height, width = input_shape
    if height < 4 or width < 4:
        raise ConfigError(
            "model.name", "cnn", f"images of at least 4x4 pixels, got {height}x{width}"
        )
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=3, padding=1),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.GroupNorm(8, 32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


def _scatter_linear(
    n_features: int, n_classes: int, hidden: int, input_shape: tuple[int, ...]
) -> nn.Module:
    """Tramer & Boneh's ScatterNet+linear: per-example GroupNorm on the coefficients, one layer.

    GroupNorm without affine weights normalises each example by its own statistics, so
    no data-dependent normalisation (and no privacy spend) is needed; groups of 3 channels
    as in their paper.
    """
    if len(input_shape) != 3 or input_shape[0] % 3:
        raise ConfigError(
            "model.name",
            "scatter_linear",
            f"scattering features (dataset.features=scattering), got input {input_shape}",
        )
    channels = input_shape[0]
    return nn.Sequential(
        nn.GroupNorm(channels // 3, channels, affine=False),
        nn.Flatten(),
        nn.Linear(n_features, n_classes),
    )


MODELS: dict[str, Factory] = {
    "logreg": _logreg,
    "mlp": _mlp,
    "cnn": _cnn,
    "scatter_linear": _scatter_linear,
}


def build_model(
    name: str,
    *,
    n_features: int,
    n_classes: int,
    hidden: int = 32,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """A freshly initialised model; the seed makes the server's initial weights reproducible.

    `input_shape` (from `DatasetInfo.input_shape`) is what a CNN needs; without it the
    input is taken to be a flat vector of `n_features`.
    """
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError("model.name", name, f"one of {sorted(MODELS)}") from None
    shape = tuple(input_shape) if input_shape else (n_features,)
    if math.prod(shape) != n_features:
        raise ValueError(f"input_shape {shape} does not hold n_features={n_features} values")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(n_features, n_classes, hidden, shape)


def model_for(cfg: ModelConfig, info: DatasetInfo, *, seed: int = 0) -> nn.Module:
    """The run's model for a data set's public shape: one builder for server and sites."""
    return build_model(
        cfg.name,
        n_features=info.n_features,
        n_classes=info.n_classes,
        hidden=cfg.hidden,
        seed=seed,
        input_shape=info.input_shape,
    )
