"""Flower strategies by name, wrapped so every reply is recorded per site before aggregation."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from common import keys
from common.attestation import arrays_digest
from common.config import StrategyConfig
from common.errors import ConfigError, IntegrityError
from server.compliance import Compliance, RejectedUpdateError
from server.recorder import RunRecorder
from server.roster import roll_call
from server.validation import MalformedReplyError, check_evaluate_reply, check_train_reply

__all__ = ["STRATEGIES", "build_strategy", "RecordingStrategy", "finite_weighted_mean"]

log = logging.getLogger("fedsafe.server")

MALFORMED_CODE = 4200  # the server dropped a reply that is not a well-formed, attested update
SILENT_CODE = 4300  # a site was sent work and did not answer in time
# The SuperLink answers for a site it lost (heartbeat missed, instruction expired).
_LOST = (ErrorCode.NODE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)


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
    """Wraps a Flower strategy with the run's compliance: who may train, which updates count.

    Each round: newcomers are asked who they are (roll call); only sites with valid signed
    consent are sent work; every reply is validated, and an update counts only if its
    attestation verifies against the site's enrolled key and the arrays received. Refusals,
    drops and silence are recorded in the run folder and the ledger.

    Stopping is clean: once fewer than `min_sites` sites train, the global model is kept as
    it was, no further training is configured, and the admitted sites evaluate it once more.
    """

    def __init__(
        self,
        inner: Strategy,
        recorder: RunRecorder,
        compliance: Compliance,
        *,
        min_sites: int,
        roll_call_timeout_s: float,
        sealed: bool,
        rounds_done: int = 0,
        on_round_end: Callable[[int, ArrayRecord], None] | None = None,
    ) -> None:
        self.inner = inner
        self.recorder = recorder
        self.compliance = compliance
        self.min_sites = min_sites
        self.roll_call_timeout_s = roll_call_timeout_s
        self.sealed = sealed
        self.offset = rounds_done  # Flower counts from 1 again after a resume; the run does not
        self.on_round_end = on_round_end
        self._latest: ArrayRecord | None = None
        self.stopped_at: int | None = None
        self._global: ArrayRecord | None = None
        self._admitted: dict[int, set[int]] = {}
        self._sent: list[Message] = []  # this phase's instructions; the grid sets their ids

    def _remember(self, messages: list[Message]) -> list[Message]:
        self._sent = messages
        return messages

    def _node_of(self, msg: Message) -> int:
        """The site a reply is about: its sender or, for the SuperLink's stand-in error reply
        (sent from SUPERLINK_NODE_ID), the node the answered instruction went to."""
        if msg.metadata.src_node_id != SUPERLINK_NODE_ID:
            return msg.metadata.src_node_id
        for sent in self._sent:
            if sent.metadata.message_id == msg.metadata.reply_to_message_id:
                return sent.metadata.dst_node_id
        return msg.metadata.src_node_id

    def summary(self) -> None:
        self.inner.summary()

    def _call_newcomers(self, grid: Grid, sampled: list[int]) -> None:
        """Roll-call the sampled nodes not yet heard from (late joiners, reconnected sites)."""
        known = set(self.compliance.roster) | self.compliance.refused_nodes
        newcomers = [n for n in sampled if n not in known]
        roll_call(grid, self.compliance, newcomers, timeout_s=self.roll_call_timeout_s)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.offset
        self._latest = arrays
        if self.stopped_at is not None:
            return []
        self.recorder.round_started(server_round)
        self._global = arrays
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._call_newcomers(grid, [m.metadata.dst_node_id for m in messages])
        seen = len(self.compliance.decisions)
        admitted = self.compliance.admitted(
            server_round, [m.metadata.dst_node_id for m in messages]
        )
        self._admitted[server_round] = admitted
        for payload in self.compliance.decisions[seen:]:  # this round's decisions only
            if payload["decision"] != "granted":
                self.recorder.site_excluded(server_round, payload["site"], payload["reason"])
        return self._remember([m for m in messages if m.metadata.dst_node_id in admitted])

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.offset
        replies = list(replies)
        if self.stopped_at is not None:
            return None, None
        self._record_silence(server_round, replies)
        ok = self._accepted(server_round, replies, train=True)
        if len(ok) < self.min_sites:
            self.stopped_at = server_round
            reason = f"{len(ok)} site(s) trained, fewer than min_sites={self.min_sites}"
            self.recorder.stopped(server_round, reason)
            self.compliance.error("strategy", f"training stopped: {reason}", server_round)
            return None, None
        arrays, metrics = self.inner.aggregate_train(server_round, ok)
        if arrays is not None:
            digest = arrays_digest({k: v.numpy() for k, v in arrays.items()})
            sites = [self.compliance.roster[m.metadata.src_node_id] for m in ok]
            self.compliance.round_aggregated(server_round, sites, digest, dict(metrics or {}))
            self._latest = arrays
        return arrays, metrics

    def _record_silence(self, server_round: int, replies: list[Message]) -> None:
        """Sites that were sent work and never answered (timeout, disconnect) are dropouts."""
        answered = {self._node_of(m) for m in replies}
        for node in sorted(self._admitted.get(server_round, set()) - answered):
            site = self.compliance.roster.get(node, f"node-{node}")
            reason = "no reply before the round timeout (disconnected or too slow)"
            self.recorder.site_failed(server_round, node, SILENT_CODE, f"site {site}: {reason}")
            self.compliance.dropped(server_round, site, reason)

    def _accepted(self, server_round: int, replies: list[Message], *, train: bool) -> list[Message]:
        """Replies that are well-formed and attested; the rest are recorded and dropped."""
        accepted = []
        for msg in replies:
            node = self._node_of(msg)
            site = self.compliance.roster.get(node, f"node-{node}")
            if msg.has_error():
                why = "disconnected" if msg.error.code in _LOST else "refused"
                self.recorder.site_failed(server_round, node, msg.error.code, msg.error.reason)
                self.compliance.dropped(server_round, site, f"{why}: {msg.error.reason}")
                continue
            try:
                if train:
                    assert self._global is not None
                    self.compliance.unseal(server_round, node, msg.content, required=self.sealed)
                    check_train_reply(msg.content, self._global)
                    self.compliance.verify_update(server_round, node, msg.content)
                else:
                    check_evaluate_reply(msg.content)
                    self.compliance.absorb_consent(site, msg.content)
            except (MalformedReplyError, RejectedUpdateError, IntegrityError) as err:
                reason = f"reply dropped: {err}"
                self.recorder.site_failed(server_round, node, MALFORMED_CODE, reason)
                self.compliance.error("validation", f"site {site}: {reason}", server_round)
                continue
            if train:
                self.compliance.record_attestation(site, msg.content)
                self.recorder.site_trained(server_round, node, msg.content)
            else:
                self.recorder.site_evaluated(server_round, node, msg.content)
            accepted.append(msg)
        self.compliance.flush()
        return accepted

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.offset
        if self.stopped_at is not None and self.stopped_at < server_round:
            return []
        admitted = self._admitted.get(server_round, set())
        messages = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return self._remember([m for m in messages if m.metadata.dst_node_id in admitted])

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        server_round += self.offset
        replies = list(replies)
        if self.stopped_at is not None and self.stopped_at < server_round:
            return None
        ok = self._accepted(server_round, replies, train=False)
        # Only replies whose release policy let a count leave can be weighted.
        weighted = [m for m in ok if keys.NUM_EXAMPLES in m.content[keys.METRICS]]
        metrics = self.inner.aggregate_evaluate(server_round, weighted) if weighted else None
        self.recorder.round_finished(server_round)
        self.compliance.sign_head()
        if self.on_round_end is not None and self._latest is not None:
            self.on_round_end(server_round, self._latest)
        return metrics
