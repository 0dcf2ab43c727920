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

import importlib
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
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
from fedsafe.common.privacy.client_level import ClientLevelAccount
from fedsafe.common.privacy.distributed_dp import (
    decode_mean,
    distributed_clipping_range,
    share_variance,
)
from fedsafe.common.secagg import (
    PRG_KEY,
    PRG_NAME,
    hardened_prg,
    secagg_sizing,
)
from fedsafe.server.bounds import cap_weights
from fedsafe.server.compliance import Compliance
from fedsafe.server.secagg_stages import HALTED_CODE, REJECTED_CODE, SecureRound, StageGrid

__all__ = [
    "HALTED_CODE",
    "REJECTED_CODE",
    "SecureAggregationGrid",
    "max_weight_for",
    "SecureRound",
]

log = logging.getLogger("fedsafe.server")


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


_WORKFLOW = "flwr.server.workflow.secure_aggregation.secaggplus_workflow"


@contextmanager
def _weight_total(state: SecureRound) -> Iterator[None]:
    """Record the unmasked sum of the weight factors (Flower's ``factor_extract``, the one
    place the workflow reads it), so it can be held against the weights the sites signed."""
    from flwr.common.secure_aggregation import ndarrays_arithmetic

    module = importlib.import_module(_WORKFLOW)
    original = getattr(module, "factor_extract", None)
    if original is not ndarrays_arithmetic.factor_extract:
        raise FedsafeError(
            f"secure aggregation: {_WORKFLOW}.factor_extract is not Flower's (flwr 1.39.x "
            "pinned); the weight check cannot be installed"
        )

    def recording(parameters: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
        total, rest = original(parameters)
        state.weight_total = int(np.asarray(total).reshape(-1)[0])
        return total, rest

    setattr(module, "factor_extract", recording)  # noqa: B010 - a module's global, pinned
    try:
        yield
    finally:
        setattr(module, "factor_extract", original)  # noqa: B010


def _signed_weight_total(state: SecureRound) -> int:
    """The weight factors the contributing sites' signed counts give, as Flower quantises them."""
    sizing = state.sizing
    assert sizing is not None
    total = 0
    for content in state.contributed.values():
        weight = float(cast(float, content.metric_records[keys.METRICS][keys.NUM_EXAMPLES]))
        total += round(weight / sizing.max_weight * sizing.quantization_range)
    return total % sizing.modulus_range


def max_weight_for(declared: Mapping[int, int], *, max_share: float) -> float:
    """The round's max_weight: the largest declared count after the share cap.

    Weights are inside the sum, so the coordinator cannot clip them afterwards; it announces
    this bound instead, each site weighs min(its count, max_weight) and one claiming more is
    refused at the boundary. A site that inflates its count at the roll call therefore weighs
    no more than `max_share` of the declared total, as in a sealed round.
    """
    capped = cap_weights({n: float(c) for n, c in declared.items()}, max_share=max_share)
    return float(max(1, math.floor(max(capped.values()))))


class SecureAggregationGrid:
    """A Grid whose training exchange is one SecAgg+ round; everything else passes through.

    ``rounds[r]`` holds round r's outcome for the strategy: the unmasked weighted mean and the
    verified statement of every site in it.
    """

    def __init__(
        self,
        grid: Grid,
        compliance: Compliance,
        security: SecurityConfig,
        *,
        timeout_s: float,
        client_level: ClientLevelAccount | None = None,
        max_weight_share: float = 1.0,
    ) -> None:
        self.grid = grid
        self.max_weight_share = max_weight_share
        self.compliance = compliance
        self.security = security
        self.timeout_s = timeout_s
        # Distributed DP: the sites add the noise shares; the sum is decoded here.
        self.distributed = (
            client_level if client_level and client_level.mode == "distributed" else None
        )
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
        nodes = [m.metadata.dst_node_id for m in sent]
        state = SecureRound(server_round, nodes=set(nodes))
        self.rounds[server_round] = state
        counts = {n: self.compliance.example_counts.get(n) for n in nodes}
        try:
            if any(c is None for c in counts.values()):
                unknown = sorted(
                    self.compliance.roster.get(n, str(n)) for n, c in counts.items() if c is None
                )
                raise FedsafeError(f"site(s) {unknown} declared no training-set size")
            state.sizing = secagg_sizing(
                [1] * len(nodes)  # client-level DP: every site weighs the same
                if self.distributed
                else [int(cast(int, c)) for c in counts.values()],
                clipping_range=self.security.secagg_clipping_range,
                threshold=self.security.secagg_threshold,
            )
            if self.distributed is None:
                state.sizing.max_weight = max_weight_for(
                    {n: int(cast(int, c)) for n, c in counts.items()},
                    max_share=self.max_weight_share,
                )
            else:
                state.sizing.clipping_range = distributed_clipping_range(
                    sites=len(nodes),
                    threshold=state.sizing.threshold,
                    noise_multiplier=self.distributed.noise_multiplier,
                    clipping_norm=self.distributed.clipping_norm,
                    target_range=state.sizing.quantization_range,
                    dim=sum(int(a.numpy().size) for a in arrays.values()),
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
        share = self._noise_share(state, ndarrays)
        stages = StageGrid(self.grid, self.compliance, state, shapes, noise_share=share)
        with hardened_prg(), _weight_total(state):
            workflow(cast(Grid, stages), legacy)
        if shim.mean is None:
            return
        signed = _signed_weight_total(state)
        if state.weight_total != signed:
            if self.distributed is not None:  # the noised sum was unmasked: it was released
                self.distributed.releases += 1
            state.halted = (
                f"secure aggregation: the weights inside the sum total {state.weight_total}, the "
                f"signed weights {signed}: a site masked with a weight it did not sign; the "
                "round's sum is not adopted"
            )
            return
        mean = parameters_to_ndarrays(shim.mean)
        if self.distributed is not None:
            assert share is not None
            mean = self._decode(state, ndarrays, mean, share)
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

    def _noise_share(self, state: SecureRound, model: list[np.ndarray]) -> dict[str, float] | None:
        """What a site must attest it added under distributed DP this round (None otherwise)."""
        account, sizing = self.distributed, state.sizing
        if account is None or sizing is None:
            return None
        share = share_variance(
            noise_multiplier=account.noise_multiplier,
            clipping_norm=account.clipping_norm,
            step=sizing.step,
            dim=sum(int(m.size) for m in model),
            threshold=sizing.threshold,
        )
        return {
            "noise_multiplier": account.noise_multiplier,
            "clipping_norm": account.clipping_norm,
            "threshold": sizing.threshold,
            "share_variance": float(share),
        }

    def _decode(
        self,
        state: SecureRound,
        model: list[np.ndarray],
        mean: list[np.ndarray],
        share: dict[str, float],
    ) -> list[np.ndarray]:
        """The global model plus the noised mean update the sites' residues sum to; `share`
        is this round's noise share (``_noise_share``), computed once."""
        account, sizing = self.distributed, state.sizing
        assert account is not None and sizing is not None
        k = len(state.contributed)
        update = decode_mean(
            mean,
            clipping_range=sizing.clipping_range,
            target_range=sizing.quantization_range,
            contributors=k,
        )
        account.releases += 1
        state.noise_std = math.sqrt(k * share["share_variance"]) * sizing.step / k
        return [m.astype(np.float64) + u for m, u in zip(model, update, strict=True)]

    def _reply(self, state: SecureRound, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        if state.aggregate is not None and node in state.contributed:
            return Message(content=state.contributed[node], reply_to=msg)
        code, reason = state.failures.get(node, (HALTED_CODE, state.halted or "not in the sum"))
        if state.halted is not None and node not in state.failures:
            reason = state.halted
        return Message(Error(code=code, reason=reason), reply_to=msg)
