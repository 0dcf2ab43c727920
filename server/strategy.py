"""Flower strategies by name, wrapped so every reply is recorded per site before aggregation."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from common import keys
from common.config import StrategyConfig
from common.errors import ConfigError
from server.recorder import RunRecorder
from server.validation import MalformedReplyError, check_evaluate_reply, check_train_reply

__all__ = ["STRATEGIES", "build_strategy", "RecordingStrategy", "finite_weighted_mean"]

log = logging.getLogger("fedsafe.server")

MALFORMED_CODE = 4200  # the server dropped a reply that is not a well-formed update


def finite_weighted_mean(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean per metric over the sites where it is finite (AUROC may be NaN)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for record in records:
        metrics = next(iter(record.metric_records.values()))
        weight = float(metrics[weight_key])
        for key, value in metrics.items():
            if key == weight_key or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            sums[key] = sums.get(key, 0.0) + weight * float(value)
            weights[key] = weights.get(key, 0.0) + weight
    return MetricRecord({k: sums[k] / weights[k] for k in sums if weights[k] > 0})


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


class RecordingStrategy(Strategy):
    """Wraps a Flower strategy: records each site's reply and refusal, stops when too few remain.

    Stopping is clean: once fewer than `min_sites` sites answer a training round the
    global model is kept as it was and no further training is configured, while every
    site still evaluates the final model.
    """

    def __init__(self, inner: Strategy, recorder: RunRecorder, *, min_sites: int) -> None:
        self.inner = inner
        self.recorder = recorder
        self.min_sites = min_sites
        self.stopped_at: int | None = None
        self._global: ArrayRecord | None = None

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.stopped_at is not None:
            return []
        self.recorder.round_started(server_round)
        self._global = arrays
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        if self.stopped_at is not None:
            return None, None
        ok = self._accepted(server_round, replies, train=True)
        if len(ok) < self.min_sites:
            self.stopped_at = server_round
            self.recorder.stopped(server_round, f"{len(ok)} site(s) trained, fewer than min_sites={self.min_sites}")
            return None, None
        return self.inner.aggregate_train(server_round, ok)

    def _accepted(self, server_round: int, replies: list[Message], *, train: bool) -> list[Message]:
        """Replies that are well-formed; refusals and malformed ones are recorded and dropped."""
        accepted = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self.recorder.site_failed(server_round, node, msg.error.code, msg.error.reason)
                continue
            try:
                if train:
                    assert self._global is not None
                    check_train_reply(msg.content, self._global)
                else:
                    check_evaluate_reply(msg.content)
            except MalformedReplyError as err:
                self.recorder.site_failed(server_round, node, MALFORMED_CODE, f"malformed reply dropped: {err}")
                continue
            if train:
                self.recorder.site_trained(server_round, node, msg.content)
            else:
                self.recorder.site_evaluated(server_round, node, msg.content)
            accepted.append(msg)
        return accepted

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.stopped_at is not None and self.stopped_at < server_round:
            return []
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        if self.stopped_at is not None and self.stopped_at < server_round:
            return None
        ok = self._accepted(server_round, replies, train=False)
        metrics = self.inner.aggregate_evaluate(server_round, ok) if ok else None
        self.recorder.round_finished(server_round)
        return metrics
