"""Secure aggregation's boundary: every SecAgg+ reply checked before Flower's workflow reads it.

``StageGrid`` is the grid the workflow talks through. Each reply must have its stage's shape
(types, sizes, pairings); a masked vector must be integers of the model's shapes in
[0, modulus) and carry the site's attestation over exactly its bytes (``masked_update.py``).
A reply that fails becomes an error reply naming the site, so the protocol unmasks around it
as a dropout; what each site did is kept in the round's ``SecureRound``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.serverapp import Grid

from fedsafe.common.errors import FedsafeError
from fedsafe.common.secagg import SecAggSizing, masked_digest
from fedsafe.server.compliance import Compliance
from fedsafe.server.masked_update import verify_masked_update

__all__ = ["HALTED_CODE", "MAX_SHARE_BYTES", "REJECTED_CODE", "SecureRound", "StageGrid"]

log = logging.getLogger("fedsafe.server")

HALTED_CODE = 4400  # the round's secure aggregation could not complete (too few sites, failure)
REJECTED_CODE = 4210  # the server refused one site's SecAgg+ reply (malformed, unattested)
MIN_SHARE_BYTES = 20  # Flower's Shamir share: a 4-byte index and at least one 16-byte chunk
MIN_SUM = 3  # the fewest masked inputs a sum may be unmasked over (with 2, one reveals the other)
MAX_SHARE_BYTES = 1 << 12  # a Shamir share or key is tens of bytes; anything larger is refused


class _BadReply(FedsafeError):
    """One site's SecAgg+ reply is not what its stage defines; it is treated as a dropout."""


@dataclass
class SecureRound:
    """What one round of secure aggregation produced: the unmasked mean and who is in it."""

    server_round: int
    sizing: SecAggSizing | None = None
    aggregate: ArrayRecord | None = None
    # node -> the verified collect-stage reply (signed statement, metrics)
    contributed: dict[int, RecordDict] = field(default_factory=dict)
    # node -> (code, reason) of the first failure seen for that node
    failures: dict[int, tuple[int, str]] = field(default_factory=dict)
    halted: str | None = None
    nodes: set[int] = field(default_factory=set)  # the nodes this round was sent to
    noise_std: float | None = None  # distributed DP: the noise on the mean, per coordinate
    weight_total: int | None = None  # the unmasked sum of the weight factors

    def fail(self, node: int, code: int, reason: str) -> None:
        self.failures.setdefault(node, (code, reason))


def _bytes_list(configs: ConfigRecord, key: str, *, limit: int | None = None) -> list[bytes]:
    value = configs.get(key)
    if not isinstance(value, list) or not all(isinstance(b, bytes) for b in value):
        raise _BadReply(f"'{key}' must be a list of bytes")
    blobs = cast(list[bytes], value)
    if limit is not None and any(len(b) > limit for b in blobs):
        raise _BadReply(f"'{key}' holds an entry over {limit} bytes")
    return blobs


def _int_list(configs: ConfigRecord, key: str) -> list[int]:
    value = configs.get(key)
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise _BadReply(f"'{key}' must be a list of node ids")
    return cast(list[int], value)


def _check_masked(vector: list[bytes], shapes: list[tuple[int, ...]], mod_range: int) -> None:
    """A masked vector is integers in [0, mod_range) of the model's shapes (plus the weight)."""
    if len(vector) != len(shapes):
        raise _BadReply(f"masked vector has {len(vector)} arrays, expected {len(shapes)}")
    for index, (blob, shape) in enumerate(zip(vector, shapes, strict=True)):
        try:
            array = bytes_to_ndarray(blob)  # np.load with allow_pickle=False
        except Exception as err:  # noqa: BLE001 - any undecodable blob is the site's fault
            raise _BadReply(
                f"masked array {index} does not decode ({type(err).__name__})"
            ) from None
        if array.shape != shape or array.dtype.kind not in "iu":
            raise _BadReply(
                f"masked array {index} is {array.dtype} {array.shape}, expected integers {shape}"
            )
        if array.size and (int(array.min()) < 0 or int(array.max()) >= mod_range):
            raise _BadReply(f"masked array {index} has values outside [0, {mod_range})")


class StageGrid:
    """The grid as Flower's workflow sees it: every reply is checked before the workflow reads
    it, and a reply that fails becomes an error reply, so the protocol treats it as a dropout."""

    def __init__(
        self,
        grid: Grid,
        compliance: Compliance,
        state: SecureRound,
        shapes: list[Any],
        *,
        noise_share: dict[str, float] | None = None,
    ) -> None:
        self._noise_share = noise_share  # distributed DP: what each site must attest
        self._grid = grid
        self._compliance = compliance
        self._state = state
        self._shapes = shapes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Any:
        sent = list(messages)
        stage = _stage_of(sent)
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        by_id = {m.metadata.message_id: m for m in sent}
        out: list[Message] = []
        answered: set[int] = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            if node == SUPERLINK_NODE_ID and reply.metadata.reply_to_message_id in by_id:
                node = by_id[reply.metadata.reply_to_message_id].metadata.dst_node_id
            answered.add(node)
            if reply.has_error():
                self._state.fail(node, reply.error.code, reply.error.reason or "")
                out.append(reply)
                continue
            try:
                self._check(stage, node, reply)
            except Exception as err:  # noqa: BLE001 - one site's reply never ends the round
                out.append(self._reject(stage, node, sent, str(err)))
                continue
            out.append(reply)
        out = self._across_replies(stage, sent, out)
        for msg in sent:
            if msg.metadata.dst_node_id not in answered:
                self._state.fail(
                    msg.metadata.dst_node_id,
                    HALTED_CODE,
                    f"no answer in the secure-aggregation {stage} stage before the timeout",
                )
        return out

    def _reject(self, stage: str, node: int, sent: list[Message], why: str) -> Message:
        """The reply of `node` refused: recorded, and an error reply in its place."""
        site = self._compliance.roster.get(node, f"node-{node}")
        reason = f"site {site}: secure aggregation {stage} reply refused: {why}"
        log.warning("round %d: %s", self._state.server_round, reason)
        self._state.fail(node, REJECTED_CODE, reason)
        self._state.contributed.pop(node, None)
        self._compliance.error("secure_aggregation", reason, self._state.server_round)
        original = next(m for m in sent if m.metadata.dst_node_id == node)
        return Message(Error(code=REJECTED_CODE, reason=reason), reply_to=original)

    def _across_replies(self, stage: str, sent: list[Message], out: list[Message]) -> list[Message]:
        """Checks no single reply can answer: keys shared by two sites (they would make every
        honest site fail), and a masked sum of fewer than MIN_SUM inputs (never unmasked)."""
        good = [m for m in out if not m.has_error()]
        if stage == Stage.SETUP:
            holders: dict[bytes, list[int]] = {}
            for msg in good:
                configs = msg.content.config_records[RECORD_KEY_CONFIGS]
                for key in (Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2):
                    holders.setdefault(cast(bytes, configs[key]), []).append(
                        msg.metadata.src_node_id
                    )
            shared = {n for nodes in holders.values() if len(nodes) > 1 for n in nodes}
            return [
                self._reject(
                    stage, m.metadata.src_node_id, sent, "its public key is another site's"
                )
                if not m.has_error() and m.metadata.src_node_id in shared
                else m
                for m in out
            ]
        if stage == Stage.COLLECT_MASKED_VECTORS and 0 < len(good) < MIN_SUM:
            why = (
                f"only {len(good)} masked input(s); a sum of fewer than {MIN_SUM} is never unmasked"
            )
            return [
                self._reject(stage, m.metadata.src_node_id, sent, why) if not m.has_error() else m
                for m in out
            ]
        return out

    def _check(self, stage: str, node: int, reply: Message) -> None:
        configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is None:
            raise _BadReply(f"the reply has no '{RECORD_KEY_CONFIGS}' record")
        if stage == Stage.SETUP:
            for key in (Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2):
                value = configs.get(key)
                if not isinstance(value, bytes) or not 0 < len(value) <= MAX_SHARE_BYTES:
                    raise _BadReply(
                        f"public key '{key}' must be bytes of at most {MAX_SHARE_BYTES}"
                    )
        elif stage == Stage.SHARE_KEYS:
            dsts = _int_list(configs, Key.DESTINATION_LIST)
            ctxts = _bytes_list(configs, Key.CIPHERTEXT_LIST, limit=MAX_SHARE_BYTES)
            if len(dsts) != len(ctxts) or len(set(dsts)) != len(dsts):
                raise _BadReply("destinations and ciphertexts must pair up, one per neighbour")
        elif stage == Stage.COLLECT_MASKED_VECTORS:
            sizing = self._state.sizing
            assert sizing is not None
            vector = _bytes_list(configs, Key.MASKED_PARAMETERS)
            _check_masked(vector, self._shapes, sizing.modulus_range)
            verified = verify_masked_update(
                self._compliance,
                self._state.server_round,
                node,
                reply.content,
                masked_digest(vector),
                max_weight=sizing.max_weight,
                noise_share=self._noise_share,
            )
            self._state.contributed[node] = verified
        elif stage == Stage.UNMASK:
            nids = _int_list(configs, Key.NODE_ID_LIST)
            shares = _bytes_list(configs, Key.SHARE_LIST, limit=MAX_SHARE_BYTES)
            if len(nids) != len(shares):
                raise _BadReply("node ids and shares must pair up")
            if len(set(nids)) != len(nids) or not set(nids) <= self._state.nodes:
                raise _BadReply("shares must be for distinct nodes of this round")
            if any(len(b) < MIN_SHARE_BYTES for b in shares):
                raise _BadReply(f"a share is shorter than {MIN_SHARE_BYTES} bytes")


def _stage_of(messages: list[Message]) -> str:
    for msg in messages:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and isinstance(configs.get(Key.STAGE), str):
            return str(configs[Key.STAGE])
    return "unknown"
