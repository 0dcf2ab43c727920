"""Flower strategies by name, wrapped so every reply is recorded per site before aggregation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import cast

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsafe.common import keys
from fedsafe.common.attestation import arrays_digest
from fedsafe.common.config import StrategyConfig
from fedsafe.common.errors import IntegrityError
from fedsafe.common.privacy.client_level import ClientLevelAccount
from fedsafe.server.aggregate import (
    AggregateRejectedError,
    capped_weights,
    checked_aggregate,
    evaluate_metrics,
    fairness_factors,
    uniform_weights,
)
from fedsafe.server.bounds import check_update_norm
from fedsafe.server.compliance import Compliance
from fedsafe.server.quantised_update import update_decoder
from fedsafe.server.recorder import RunRecorder
from fedsafe.server.roster import EligibleGrid, roll_call
from fedsafe.server.secure_aggregation import SecureAggregationGrid
from fedsafe.server.strategies import STRATEGIES, build_strategy, finite_weighted_mean
from fedsafe.server.validation import (
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


class RecordingStrategy(Strategy):
    """Wraps a Flower strategy with the run's compliance: who may train, which updates count.

    Each round: newcomers are asked who they are (roll call); only sites with valid signed
    consent are sent work; every reply is validated, and an update counts only if its
    attestation verifies against the site's enrolled key and the arrays received. Refusals,
    drops and silence are recorded in the run folder and the ledger.

    Against a hostile site: each update weighs its signed example count, clipped to
    `max_weight_share`; an update or aggregate further than `max_update_norm` from the model,
    or not finite, is refused (an aggregate refusal keeps the previous model); a second reply
    from a node is dropped; any failure handling one reply is a recorded drop naming the site.

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
        secure: SecureAggregationGrid | None = None,
        client_level: ClientLevelAccount | None = None,
        roll_call_patience_s: float = 0.0,
        update_bits: int = 32,
    ) -> None:
        self.update_bits = update_bits  # 8: sites send 8-bit codes, dequantised as they open
        self.roll_call_patience_s = roll_call_patience_s
        self.inner = inner
        self.client_level = client_level  # the run's client-level DP releases, if any
        self.secure = secure  # updates arrive as one SecAgg+ sum (see secure_aggregation.py)
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
        wait = {"timeout_s": self.roll_call_timeout_s, "patience_s": self.roll_call_patience_s}
        roll_call(grid, self.compliance, newcomers, **wait)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.offset
        self._latest = arrays
        if self.stopped_at is not None:
            return []
        self.recorder.round_started(server_round)
        self._global = arrays
        bound = self.limits.max_update_norm  # how a round's updates are read: the model sent
        self.compliance.decode = update_decoder(self.update_bits, arrays, bound=bound)
        if self.client_level is not None and not self.client_level.allows_another():
            account = self.client_level
            reason = (
                f"one more release would take client-level epsilon to "
                f"{account.epsilon(account.releases + 1):.4g}, past "
                f"privacy.client_level.max_epsilon={account.max_epsilon:g}"
            )
            self.stopped_at = server_round
            self.recorder.stopped(server_round, reason)
            self.compliance.error("strategy", f"training stopped: {reason}", server_round)
            return []
        eligible = EligibleGrid(grid, self.compliance.refused_nodes)
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
        sites = {m.metadata.src_node_id: self.compliance.roster[m.metadata.src_node_id] for m in ok}
        if self.secure is not None:
            return self._adopt_secure_sum(server_round, ok, sites)
        clipped: dict[int, int] = {}
        if self.client_level is not None:  # uniform: one site moves the mean by at most C / k
            weights = uniform_weights(ok)
        else:
            factors = fairness_factors(
                self.recorder.held_out_losses(), sites, q=self.limits.fairness_q
            )
            weights, clipped = capped_weights(
                ok, max_share=self.limits.max_weight_share, factors=factors
            )
        for node, signed in clipped.items():
            message = (
                f"site {sites[node]}: weight {signed} clipped to {weights[node]:.6g} "
                f"(strategy.max_weight_share={self.limits.max_weight_share:g})"
            )
            log.warning("round %d: %s", server_round, message)
            self.compliance.error("strategy", message, server_round)
        assert self._global is not None
        try:
            arrays, metrics = checked_aggregate(
                self.inner, server_round, ok, self._global, self.limits
            )
        except AggregateRejectedError as err:
            log.error("round %d: %s", server_round, err)
            self.compliance.error("strategy", str(err), server_round)
            return None, None
        digest = arrays_digest({k: v.numpy() for k, v in arrays.items()})
        # The aggregate's scalar metrics (finite_weighted_mean makes only scalars).
        scalars = {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        self.compliance.round_aggregated(
            server_round,
            list(sites.values()),
            digest,
            scalars,
            weights={sites[n]: w for n, w in weights.items()},
            details=self._client_level_details(),
        )
        self._latest = arrays
        return arrays, metrics

    def _adopt_secure_sum(
        self, server_round: int, ok: list[Message], sites: dict[int, str]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The round's SecAgg+ weighted mean through the inner strategy (FedAdam's server
        step applies to it as to any mean), with the same finiteness and movement checks.

        Weights cannot be clipped here: each site weighted its own vector before masking, by
        the count it signed, at most the round's max_weight (checked before the sum).
        """
        assert self.secure is not None and self._global is not None
        outcome = self.secure.rounds[server_round]
        assert outcome.aggregate is not None and outcome.sizing is not None
        mean = Message(
            RecordDict(
                {
                    keys.ARRAYS: outcome.aggregate,
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1.0}),
                }
            ),
            dst_node_id=0,
            message_type=MessageType.TRAIN,
        )
        try:
            arrays, _ = checked_aggregate(
                self.inner, server_round, [mean], self._global, self.limits
            )
        except AggregateRejectedError as err:
            log.error("round %d: %s", server_round, err)
            self.compliance.error("strategy", str(err), server_round)
            return None, None
        metrics = finite_weighted_mean([m.content for m in ok], keys.NUM_EXAMPLES)
        digest = arrays_digest({k: v.numpy() for k, v in arrays.items()})
        weights = {
            sites[m.metadata.src_node_id]: float(m.content[keys.METRICS][keys.NUM_EXAMPLES])  # type: ignore[arg-type,index]
            for m in ok
        }
        self.compliance.round_aggregated(
            server_round,
            list(sites.values()),
            digest,
            {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
            weights=weights,
            details={
                "protocol": {"secure_aggregation": "secagg+", **outcome.sizing.as_dict()},
                **(self._client_level_details(server_round) or {}),
            },
        )
        self._latest = arrays
        return arrays, metrics

    def _client_level_details(self, server_round: int = 0) -> dict[str, object] | None:
        """The round's client-level release for the ledger: noise and the run's epsilon."""
        if self.client_level is None:
            return None
        noise = getattr(self.inner, "last_noise_std", None)
        if self.secure is not None and server_round in self.secure.rounds:
            noise = self.secure.rounds[server_round].noise_std
        return {"client_level": self.client_level.release_record(noise)}

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
        if train and self.secure is not None:
            # Verified where it arrived (masked_update.py), before its vector entered the sum.
            self.compliance.record_attestation(site, content)
            self.recorder.site_trained(server_round, node, content)
            return
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
        metrics = evaluate_metrics(ok, max_share=self.limits.max_weight_share) if ok else None
        self.recorder.round_finished(server_round)
        self.compliance.sign_head()
        if self.on_round_end is not None and self._latest is not None:
            self.on_round_end(server_round, self._latest)
        return metrics
