"""Models by registry name; every one is valid under Opacus (no BatchNorm)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from common.errors import ConfigError

__all__ = ["MODELS", "build_model"]


def _logreg(n_features: int, n_classes: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, n_classes))


def _mlp(n_features: int, n_classes: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


MODELS: dict[str, Callable[[int, int, int], nn.Module]] = {"logreg": _logreg, "mlp": _mlp}


def build_model(name: str, *, n_features: int, n_classes: int, hidden: int = 32, seed: int = 0) -> nn.Module:
    """A freshly initialised model; the seed makes the server's initial weights reproducible."""
    import torch

    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError("model.name", name, f"one of {sorted(MODELS)}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(n_features, n_classes, hidden)
