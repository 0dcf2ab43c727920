"""Flower's own strategies by name (what `strategy=NAME` picks) and the per-metric mean."""

from __future__ import annotations

import math
from collections.abc import Callable

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from fedsafe.common import keys
from fedsafe.common.config import StrategyConfig
from fedsafe.common.errors import ConfigError
from fedsafe.server.robust import ROBUST

__all__ = ["STRATEGIES", "build_strategy", "finite_weighted_mean"]


def finite_weighted_mean(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Per metric, the example-weighted mean over the sites where it is finite (AUROC may be
    NaN). A site's release policy may withhold a metric or its example count: a metric is
    averaged over the sites that sent it, unweighted if one of them sent no usable count."""
    rows = [next(iter(record.metric_records.values())) for record in records]
    names = sorted({k for row in rows for k in row} - {weight_key})
    out: dict[str, float] = {}
    for key in names:
        pairs = []
        for row in rows:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                weight = row.get(weight_key)
                pairs.append((weight, float(value)))
        weighted = [
            (float(w), v)
            for w, v in pairs
            if isinstance(w, (int, float)) and math.isfinite(w) and w > 0
        ]
        if pairs and len(weighted) == len(pairs):
            total = sum(w for w, _ in weighted)
            out[key] = sum(w * v for w, v in weighted) / total
        elif pairs:
            out[key] = sum(v for _, v in pairs) / len(pairs)
    return MetricRecord(out)  # type: ignore[arg-type]


def _fedavg(cfg: StrategyConfig, **common: object) -> Strategy:
    return FedAvg(**common)  # type: ignore[arg-type]


def _fedprox(cfg: StrategyConfig, **common: object) -> Strategy:
    return FedProx(**common, proximal_mu=cfg.proximal_mu)  # type: ignore[arg-type]


def _fedadam(cfg: StrategyConfig, **common: object) -> Strategy:
    return FedAdam(**common, eta=cfg.server_learning_rate)  # type: ignore[arg-type]


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "fedavg": _fedavg,
    "fedprox": _fedprox,
    "fedadam": _fedadam,
    **ROBUST,
}


def build_strategy(cfg: StrategyConfig) -> Strategy:
    """One of Flower's own strategies, configured from the run's strategy section."""
    try:
        factory = STRATEGIES[cfg.name]
    except KeyError:
        raise ConfigError("strategy.name", cfg.name, f"one of {sorted(STRATEGIES)}") from None
    return factory(
        cfg,
        fraction_train=cfg.fraction_train,
        fraction_evaluate=1.0,
        min_train_nodes=cfg.min_sites,
        min_evaluate_nodes=cfg.min_sites,
        min_available_nodes=cfg.min_sites,
        weighted_by_key=keys.NUM_EXAMPLES,
        arrayrecord_key=keys.ARRAYS,
        configrecord_key=keys.CONFIG,
        evaluate_metrics_aggr_fn=finite_weighted_mean,
        train_metrics_aggr_fn=finite_weighted_mean,
    )
