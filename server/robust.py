"""Flower's Byzantine-robust Message-API strategies (flwr.serverapp.strategy), chosen by name.

Each bounds what a minority of poisoned updates can do to the aggregate, given enough honest
sites: FedMedian (coordinate-wise median), FedTrimmedAvg (trimmed mean, `trim_fraction` cut
from each tail), Krum / MultiKrum (the update(s) closest to their neighbours, tolerating
`num_malicious_sites`), Bulyan (MultiKrum selection, then a trimmed median). A run whose
`min_sites` is too small for the tolerance asked for is refused up front, because below it
these rules silently stop being robust.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Strategy

from fedsafe.common.config import StrategyConfig
from fedsafe.common.errors import ConfigError

__all__ = ["ROBUST", "required_sites"]


def required_sites(cfg: StrategyConfig) -> int:
    """The fewest training sites for which the strategy's robustness guarantee holds."""
    f = cfg.num_malicious_sites
    if cfg.name in ("krum", "multikrum"):
        return 2 * f + 3  # Krum scores each update over its n - f - 2 nearest neighbours
    if cfg.name == "bulyan":
        return 4 * f + 3  # El Mhamdi et al.: n >= 4f + 3
    if cfg.name == "fedtrimmedavg":
        # int(trim_fraction * n) sites are cut from each tail: at least one must be
        return math.ceil(1 / cfg.trim_fraction - 1e-9) if cfg.trim_fraction > 0 else 1
    if cfg.name == "fedmedian":
        return 3  # a median of two is their mean
    return 1


def _checked(cfg: StrategyConfig) -> None:
    needed = required_sites(cfg)
    if cfg.min_sites < needed:
        raise ConfigError(
            "strategy.min_sites",
            cfg.min_sites,
            f"an integer >= {needed} for strategy '{cfg.name}' with num_malicious_sites="
            f"{cfg.num_malicious_sites}, trim_fraction={cfg.trim_fraction} (fewer sites make "
            "the aggregate no longer robust)",
        )
    if cfg.name == "multikrum" and cfg.num_selected_sites > cfg.min_sites - cfg.num_malicious_sites:
        raise ConfigError(
            "strategy.num_selected_sites",
            cfg.num_selected_sites,
            f"at most min_sites - num_malicious_sites = {cfg.min_sites - cfg.num_malicious_sites}",
        )


def _fedmedian(cfg: StrategyConfig, **common: object) -> Strategy:
    _checked(cfg)
    return FedMedian(**common)  # type: ignore[arg-type]


def _fedtrimmedavg(cfg: StrategyConfig, **common: object) -> Strategy:
    _checked(cfg)
    return FedTrimmedAvg(**common, beta=cfg.trim_fraction)  # type: ignore[arg-type]


def _krum(cfg: StrategyConfig, **common: object) -> Strategy:
    _checked(cfg)
    return Krum(**common, num_malicious_nodes=cfg.num_malicious_sites)  # type: ignore[arg-type]


def _multikrum(cfg: StrategyConfig, **common: object) -> Strategy:
    _checked(cfg)
    return MultiKrum(
        **common,  # type: ignore[arg-type]
        num_malicious_nodes=cfg.num_malicious_sites,
        num_nodes_to_select=cfg.num_selected_sites,
    )


def _bulyan(cfg: StrategyConfig, **common: object) -> Strategy:
    _checked(cfg)
    return Bulyan(**common, num_malicious_nodes=cfg.num_malicious_sites)  # type: ignore[arg-type]


ROBUST: dict[str, Callable[..., Strategy]] = {
    "fedmedian": _fedmedian,
    "fedtrimmedavg": _fedtrimmedavg,
    "krum": _krum,
    "multikrum": _multikrum,
    "bulyan": _bulyan,
}
