"""Flower strategies by name, wrapped so every reply is recorded per site before aggregation."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, cast

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from common import keys
from common.attestation import arrays_digest
from common.config import StrategyConfig
from common.errors import ConfigError, IntegrityError
from server.bounds import AggregateRejectedError, cap_weights, check_update_norm, distance
from server.compliance import Compliance
from server.recorder import RunRecorder
from server.robust import ROBUST
from server.roster import roll_call
from server.validation import (
    MalformedReplyError,
    RejectedUpdateError,
    check_evaluate_reply,
    check_train_reply,
    reply_site_name,
)

__all__ = ["STRATEGIES", "build_strategy", "RecordingStrategy", "finite_weighted_mean"]

log = logging.getLogger("fedsafe.server")

MALFORMED_CODE = 4200  # the server dropped a reply that is not a well-formed, attested update
SILENT_CODE = 4300  # a site was sent work and did not answer in time
# The SuperLink answers for a site it lost (heartbeat missed, instruction expired).
_LOST = (ErrorCode.NODE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)


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


def _metrics(msg: Message) -> MetricRecord:
    return msg.content.metric_records[keys.METRICS]


class _EligibleGrid:
    """The grid as the inner strategy samples it: nodes refused at the roll call are left out,
    so a refused node never takes a training slot (nor trains) for the rest of the run."""

    def __init__(self, grid: Grid, refused: set[int]) -> None:
        self._grid, self._refused = grid, refused

    def get_node_ids(self) -> list[int]:
        return [n for n in self._grid.get_node_ids() if n not in self._refused]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


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
        limits: StrategyConfig | None = None,
    ) -> None:
        self.inner = inner
        self.limits = limits if limits is not None else StrategyConfig(min_sites=min_sites)
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
        eligible = _EligibleGrid(grid, self.compliance.refused_nodes)
        if len(eligible.get_node_ids()) < self.min_sites:  # Flower's sampler would wait forever
            reason = (
                f"{len(eligible.get_node_ids())} connected site(s) not refused at the roll call, "
                f"fewer than min_sites={self.min_sites}"
            )
            self.stopped_at = server_round
            self.recorder.stopped(server_round, reason)
            self.compliance.error("strategy", f"training stopped: {reason}", server_round)
            return []
        messages = list(
            self.inner.configure_train(server_round, arrays, config, cast(Grid, eligible))
        )
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
        weights = self._cap_weights(server_round, ok)
        sites = [self.compliance.roster[m.metadata.src_node_id] for m in ok]
        arrays, metrics = self._aggregate(server_round, ok)
        if arrays is not None:
            digest = arrays_digest({k: v.numpy() for k, v in arrays.items()})
            self.compliance.round_aggregated(
                server_round, sites, digest, dict(metrics or {}), weights=weights
            )
            self._latest = arrays
        return arrays, metrics

    def _cap_weights(self, server_round: int, ok: list[Message]) -> dict[str, float]:
        """Each update weighs its signed example count, clipped to strategy.max_weight_share."""
        signed = {
            m.metadata.src_node_id: int(_metrics(m)[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
            for m in ok
        }
        capped = cap_weights(signed, max_share=self.limits.max_weight_share)
        for msg in ok:
            node = msg.metadata.src_node_id
            _metrics(msg)[keys.NUM_EXAMPLES] = capped[node]
            if capped[node] < signed[node]:
                site = self.compliance.roster[node]
                message = (
                    f"site {site}: weight {signed[node]} clipped to {capped[node]:.6g} "
                    f"(strategy.max_weight_share={self.limits.max_weight_share:g})"
                )
                log.warning("round %d: %s", server_round, message)
                self.compliance.error("strategy", message, server_round)
        return {self.compliance.roster[n]: w for n, w in capped.items()}

    def _aggregate(
        self, server_round: int, ok: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The inner strategy's aggregate, adopted only if it is finite and within the norm bound.

        Otherwise the previous global model is kept, the inner strategy's own state (FedAdam's
        moments) is rolled back, and the refusal is recorded.
        """
        assert self._global is not None
        state = copy.deepcopy(vars(self.inner))
        try:
            arrays, metrics = self.inner.aggregate_train(server_round, ok)
            if arrays is None:
                raise AggregateRejectedError(f"strategy '{self.limits.name}' produced no aggregate")
            if list(arrays.keys()) != list(self._global.keys()):
                raise AggregateRejectedError(
                    "the aggregate's arrays differ from the global model's"
                )
            # Flower's FedAdam returns float64; the global model keeps its own dtypes.
            arrays = ArrayRecord(
                {k: Array(arrays[k].numpy().astype(ref.dtype)) for k, ref in self._global.items()}
            )
            moved = distance(arrays, self._global)
            if not moved <= self.limits.max_update_norm:
                raise AggregateRejectedError(
                    f"the aggregate moves the model by {moved:.4g} (L2; inf if not finite), "
                    f"more than strategy.max_update_norm={self.limits.max_update_norm:g}"
                )
        except Exception as err:  # noqa: BLE001 - a bad aggregate must never become the model
            vars(self.inner).clear()
            vars(self.inner).update(state)
            message = f"aggregate refused, previous model kept: {type(err).__name__}: {err}"
            log.error("round %d: %s", server_round, message)
            self.compliance.error("strategy", message, server_round)
            return None, None
        return arrays, metrics

    def _record_silence(self, server_round: int, replies: list[Message]) -> None:
        """Sites that were sent work and never answered (timeout, disconnect) are dropouts."""
        answered = {self._node_of(m) for m in replies}
        for node in sorted(self._admitted.get(server_round, set()) - answered):
            site = self.compliance.roster.get(node, f"node-{node}")
            reason = "no reply before the round timeout (disconnected or too slow)"
            self.recorder.site_failed(server_round, node, SILENT_CODE, f"site {site}: {reason}")
            self.compliance.dropped(server_round, site, reason)

    def _drop(self, server_round: int, node: int, site: str, reason: str) -> None:
        self.recorder.site_failed(server_round, node, MALFORMED_CODE, f"site {site}: {reason}")
        self.compliance.error("validation", f"site {site}: {reason}", server_round)

    def _accepted(self, server_round: int, replies: list[Message], *, train: bool) -> list[Message]:
        """Replies that are well-formed and attested; the rest are recorded and dropped.

        This is the per-reply boundary: whatever one site sends, and whatever goes wrong while
        handling it, ends as a recorded drop naming the site, never as a crashed round.
        """
        accepted: list[Message] = []
        seen: set[int] = set()
        for msg in replies:
            node = self._node_of(msg)
            site = self.compliance.roster.get(node, f"node-{node}")
            if node in seen:
                self._drop(server_round, node, site, "answered twice; only its first reply counts")
                continue
            seen.add(node)
            if msg.has_error():
                why = "disconnected" if msg.error.code in _LOST else "refused"
                self.recorder.site_failed(
                    server_round, node, msg.error.code, msg.error.reason or ""
                )
                self.compliance.dropped(server_round, site, f"{why}: {msg.error.reason}")
                continue
            try:
                self._check(server_round, node, msg.content, train=train)
            except (MalformedReplyError, RejectedUpdateError, IntegrityError) as err:
                self._drop(server_round, node, site, f"reply dropped: {err}")
                continue
            except Exception as err:  # noqa: BLE001 - one site must never crash the round
                log.exception("round %d: reply of site %s could not be handled", server_round, site)
                reason = f"reply dropped: could not be handled ({type(err).__name__}: {err})"
                self._drop(server_round, node, site, reason)
                continue
            accepted.append(msg)
        self.compliance.flush()
        return accepted

    def _check(self, server_round: int, node: int, content: RecordDict, *, train: bool) -> None:
        """Validate one reply, then record it; raises on anything the coordinator cannot count."""
        site = self.compliance.roster.get(node)
        if site is None:
            raise RejectedUpdateError(f"node {node} is not on this run's roster")
        if train:
            assert self._global is not None
            self.compliance.unseal(server_round, node, content, required=self.sealed)
            check_train_reply(content, self._global)
        else:
            check_evaluate_reply(content)
        claimed = reply_site_name(content)
        if claimed != site:
            raise RejectedUpdateError(f"reply names site '{claimed}'; this node is '{site}'")
        if train:
            assert self._global is not None
            norm = check_update_norm(
                content.array_records[keys.ARRAYS],
                self._global,
                max_norm=self.limits.max_update_norm,
            )
            self.compliance.verify_update(server_round, node, content)
            self.compliance.record_attestation(site, content)
            self.recorder.site_trained(server_round, node, content, update_norm=norm)
        else:
            self.compliance.absorb_consent(site, content, server_round)
            self.recorder.site_evaluated(server_round, node, content)

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
        metrics = self._evaluate_metrics(ok) if ok else None
        self.recorder.round_finished(server_round)
        self.compliance.sign_head()
        if self.on_round_end is not None and self._latest is not None:
            self.on_round_end(server_round, self._latest)
        return metrics

    def _evaluate_metrics(self, ok: list[Message]) -> MetricRecord:
        """Held-out metrics over the sites that sent them, counts clipped like training weights.

        Not the inner strategy's: Flower's requires every reply to carry the same metric keys,
        and a site's release policy may send any subset.
        """
        counts = {
            m.metadata.src_node_id: float(_metrics(m)[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
            for m in ok
            if keys.NUM_EXAMPLES in _metrics(m)
        }
        capped = cap_weights(counts, max_share=self.limits.max_weight_share)
        contents = []
        for msg in ok:
            metrics = dict(_metrics(msg))
            if msg.metadata.src_node_id in capped:
                metrics[keys.NUM_EXAMPLES] = capped[msg.metadata.src_node_id]
            contents.append(RecordDict({keys.METRICS: MetricRecord(metrics)}))  # type: ignore[arg-type]
        return finite_weighted_mean(contents, keys.NUM_EXAMPLES)
