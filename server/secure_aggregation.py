"""Secure aggregation as a way of moving updates, inside the one coordinator loop.

``RecordingStrategy`` runs every mode: roll call, consent gate, attestations, ledger,
checkpoints. In this mode the strategy is given a ``SecureAggregationGrid``: when the strategy
sends a round's training instructions, the grid runs Flower's SecAgg+ workflow (with the
ChaCha20 mask generator) among exactly those sites and answers with one reply per site that
carries the site's signed statement and scalar metrics, never an update. The unmasked *sum*
is kept on the grid for the strategy to adopt.

Every SecAgg+ reply is checked at this boundary before the workflow reads it (types, sizes,
shapes, ranges); a masked vector counts only if the site's attestation, verified against its
enrolled key, commits to exactly those bytes. A reply that fails becomes an error reply
naming the site, so the protocol unmasks around it as a dropout; whatever else goes wrong in
one round halts that round (recorded), never the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    bytes_to_ndarray,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat import LegacyContext
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedsafe.common import keys
from fedsafe.common.config import SecurityConfig
from fedsafe.common.errors import FedsafeError
from fedsafe.common.secagg import (
    PRG_KEY,
    PRG_NAME,
    SecAggSizing,
    hardened_prg,
    masked_digest,
    secagg_sizing,
)
from fedsafe.server.compliance import Compliance
from fedsafe.server.masked_update import verify_masked_update

__all__ = [
    "HALTED_CODE",
    "REJECTED_CODE",
    "SecureAggregationGrid",
    "SecureRound",
]

log = logging.getLogger("fedsafe.server")

HALTED_CODE = 4400  # the round's secure aggregation could not complete (too few sites, failure)
REJECTED_CODE = 4210  # the server refused one site's SecAgg+ reply (malformed, unattested)
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


class _StageGrid:
    """The grid as Flower's workflow sees it: every reply is checked before the workflow reads
    it, and a reply that fails becomes an error reply, so the protocol treats it as a dropout."""

    def __init__(self, outer: SecureAggregationGrid, state: SecureRound, shapes: list[Any]) -> None:
        self._outer = outer
        self._state = state
        self._shapes = shapes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outer.grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Any:
        sent = list(messages)
        stage = _stage_of(sent)
        replies = list(self._outer.grid.send_and_receive(sent, timeout=timeout))
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
                site = self._outer.compliance.roster.get(node, f"node-{node}")
                reason = f"site {site}: secure aggregation {stage} reply refused: {err}"
                log.warning("round %d: %s", self._state.server_round, reason)
                self._state.fail(node, REJECTED_CODE, reason)
                self._outer.compliance.error("secure_aggregation", reason, self._state.server_round)
                original = next(m for m in sent if m.metadata.dst_node_id == node)
                out.append(Message(Error(code=REJECTED_CODE, reason=reason), reply_to=original))
                continue
            out.append(reply)
        for msg in sent:
            if msg.metadata.dst_node_id not in answered:
                self._state.fail(
                    msg.metadata.dst_node_id,
                    HALTED_CODE,
                    f"no answer in the secure-aggregation {stage} stage before the timeout",
                )
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
                self._outer.compliance,
                self._state.server_round,
                node,
                reply.content,
                masked_digest(vector),
                max_weight=sizing.max_weight,
            )
            self._state.contributed[node] = verified
        elif stage == Stage.UNMASK:
            nids = _int_list(configs, Key.NODE_ID_LIST)
            shares = _bytes_list(configs, Key.SHARE_LIST, limit=MAX_SHARE_BYTES)
            if len(nids) != len(shares):
                raise _BadReply("node ids and shares must pair up")


def _stage_of(messages: list[Message]) -> str:
    for msg in messages:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and isinstance(configs.get(Key.STAGE), str):
            return str(configs[Key.STAGE])
    return "unknown"


class _RoundShim(LegacyStrategy):
    """The legacy strategy the workflow drives: it picks exactly the sites the compliance layer
    admitted (their instructions already built) and keeps the unmasked mean it is handed."""

    def __init__(self, instructions: dict[int, FitIns], proxies: dict[int, ClientProxy]) -> None:
        self.instructions = instructions
        self.proxies = proxies
        self.mean: Parameters | None = None
        self.results: list[tuple[ClientProxy, FitRes]] = []

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return [(self.proxies[n], ins) for n, ins in self.instructions.items()]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        # The workflow sets every result's parameters to the one unmasked weighted mean.
        self.results = results
        self.mean = results[0][1].parameters if results else None
        return self.mean, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None


class SecureAggregationGrid:
    """A Grid whose training exchange is one SecAgg+ round; everything else passes through.

    ``rounds[r]`` holds round r's outcome for the strategy: the unmasked weighted mean and the
    verified statement of every site in it.
    """

    def __init__(
        self, grid: Grid, compliance: Compliance, security: SecurityConfig, *, timeout_s: float
    ) -> None:
        self.grid = grid
        self.compliance = compliance
        self.security = security
        self.timeout_s = timeout_s
        self.rounds: dict[int, SecureRound] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Any:
        sent = list(messages)
        if not sent or any(m.metadata.message_type != MessageType.TRAIN for m in sent):
            return self.grid.send_and_receive(sent, timeout=timeout)
        return self._secure_round(sent)

    def _secure_round(self, sent: list[Message]) -> list[Message]:
        content = sent[0].content
        arrays = content.array_records[keys.ARRAYS]
        config = dict(content.config_records[keys.CONFIG])
        server_round = int(cast(int, config[keys.SERVER_ROUND]))
        state = SecureRound(server_round)
        self.rounds[server_round] = state
        nodes = [m.metadata.dst_node_id for m in sent]
        counts = {n: self.compliance.example_counts.get(n) for n in nodes}
        try:
            if any(c is None for c in counts.values()):
                unknown = sorted(
                    self.compliance.roster.get(n, str(n)) for n, c in counts.items() if c is None
                )
                raise FedsafeError(f"site(s) {unknown} declared no training-set size")
            state.sizing = secagg_sizing(
                [int(cast(int, c)) for c in counts.values()],
                clipping_range=self.security.secagg_clipping_range,
                threshold=self.security.secagg_threshold,
            )
            self._run_workflow(state, sent, arrays, config)
        except Exception as err:  # noqa: BLE001 - a failed round is recorded, never the run's end
            log.exception("round %d: secure aggregation failed", server_round)
            state.halted = f"secure aggregation failed: {type(err).__name__}: {err}"
        if state.aggregate is None and state.halted is None:
            state.halted = (
                "secure aggregation halted: too few sites left for its reconstruction threshold"
            )
        if state.halted is not None:
            self.compliance.error("secure_aggregation", state.halted, server_round)
        return [self._reply(state, msg) for msg in sent]

    def _run_workflow(
        self, state: SecureRound, sent: list[Message], arrays: ArrayRecord, config: dict[str, Any]
    ) -> None:
        sizing = state.sizing
        assert sizing is not None
        ndarrays = [a.numpy() for a in arrays.values()]
        parameters = ndarrays_to_parameters(ndarrays)
        fit_config: dict[str, Scalar] = {**config, PRG_KEY: PRG_NAME}
        nodes = [m.metadata.dst_node_id for m in sent]
        shim = _RoundShim(
            {n: FitIns(parameters, fit_config) for n in nodes},
            {n: GridClientProxy(n, self.grid, 0) for n in nodes},
        )
        empty = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
        legacy = LegacyContext(context=empty, config=ServerConfig(num_rounds=1), strategy=shim)
        legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            parameters, keep_input=True
        )
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: state.server_round}
        )
        workflow = SecAggPlusWorkflow(
            num_shares=sizing.num_shares,
            reconstruction_threshold=sizing.threshold,
            max_weight=sizing.max_weight,
            clipping_range=sizing.clipping_range,
            quantization_range=sizing.quantization_range,
            modulus_range=sizing.modulus_range,
            timeout=self.timeout_s,
        )
        shapes = [(1,)] + [a.shape for a in ndarrays]
        with hardened_prg():
            workflow(cast(Grid, _StageGrid(self, state, shapes)), legacy)
        if shim.mean is None:
            return
        mean = parameters_to_ndarrays(shim.mean)
        state.aggregate = ArrayRecord(
            {
                name: Array(np.asarray(value, dtype=ref.dtype))
                for (name, ref), value in zip(
                    ((k, v.numpy()) for k, v in arrays.items()), mean, strict=True
                )
            }
        )
        # Sites whose vector went into the sum but that failed later (unmask) still count.
        for node in list(state.failures):
            if node in state.contributed and state.failures[node][0] != REJECTED_CODE:
                del state.failures[node]

    def _reply(self, state: SecureRound, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        if state.aggregate is not None and node in state.contributed:
            return Message(content=state.contributed[node], reply_to=msg)
        code, reason = state.failures.get(node, (HALTED_CODE, state.halted or "not in the sum"))
        if state.halted is not None and node not in state.failures:
            reason = state.halted
        return Message(Error(code=code, reason=reason), reply_to=msg)
