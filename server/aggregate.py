"""What replies may do to the model: clipped weights, a checked aggregate, held-out means."""

from __future__ import annotations

import copy

from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from fedsafe.common import keys
from fedsafe.common.config import StrategyConfig
from fedsafe.server.bounds import cap_weights, distance
from fedsafe.server.central_dp import base_strategy
from fedsafe.server.strategies import finite_weighted_mean
from fedsafe.server.validation import MalformedReplyError

__all__ = [
    "AggregateRejectedError",
    "capped_weights",
    "checked_aggregate",
    "evaluate_metrics",
    "uniform_weights",
]


class AggregateRejectedError(MalformedReplyError):
    """The round's aggregate is not finite or moved too far; the previous model is kept."""


def _metrics(msg: Message) -> MetricRecord:
    return msg.content.metric_records[keys.METRICS]


def capped_weights(
    ok: list[Message], *, max_share: float
) -> tuple[dict[int, float], dict[int, int]]:
    """Set each update's weight to its signed example count clipped to `max_share` of the total.

    The counts were checked equal to the signed attestation before; the weight Flower reads
    (`num-examples`) is overwritten in place. Returns (weight per node, signed count of each
    node whose weight was clipped).
    """
    signed = {
        m.metadata.src_node_id: int(_metrics(m)[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
        for m in ok
    }
    capped = cap_weights(signed, max_share=max_share)
    for msg in ok:
        _metrics(msg)[keys.NUM_EXAMPLES] = capped[msg.metadata.src_node_id]
    return capped, {n: w for n, w in signed.items() if capped[n] < w}


def uniform_weights(ok: list[Message]) -> dict[int, float]:
    """Every update weighs 1 (client-level DP: the mean's sensitivity to one site is C / k)."""
    for msg in ok:
        _metrics(msg)[keys.NUM_EXAMPLES] = 1.0
    return {m.metadata.src_node_id: 1.0 for m in ok}


def checked_aggregate(
    inner: Strategy,
    server_round: int,
    ok: list[Message],
    reference: ArrayRecord,
    limits: StrategyConfig,
) -> tuple[ArrayRecord, MetricRecord | None]:
    """The inner strategy's aggregate, only if it has the model's arrays, is finite and moved
    it by at most `limits.max_update_norm`; else AggregateRejectedError, with the inner
    strategy's own state (FedAdam's moments) rolled back so a refused round leaves no trace.
    """
    target = base_strategy(inner)  # a DP wrapper's account and noise source are not rolled back
    state = copy.deepcopy(vars(target))
    try:
        arrays, metrics = inner.aggregate_train(server_round, ok)
        if arrays is None:
            raise AggregateRejectedError(f"strategy '{limits.name}' produced no aggregate")
        if list(arrays.keys()) != list(reference.keys()):
            raise AggregateRejectedError("the aggregate's arrays differ from the global model's")
        # Flower's FedAdam returns float64; the global model keeps its own dtypes.
        arrays = ArrayRecord(
            {k: Array(arrays[k].numpy().astype(ref.dtype)) for k, ref in reference.items()}
        )
        moved = distance(arrays, reference)
        if not moved <= limits.max_update_norm:
            raise AggregateRejectedError(
                f"the aggregate moves the model by {moved:.4g} (L2; inf if not finite), "
                f"more than strategy.max_update_norm={limits.max_update_norm:g}"
            )
    except Exception as err:  # noqa: BLE001 - a bad aggregate must never become the model
        vars(target).clear()
        vars(target).update(state)
        raise AggregateRejectedError(
            f"aggregate refused, previous model kept: {type(err).__name__}: {err}"
        ) from err
    return arrays, metrics


def evaluate_metrics(ok: list[Message], *, max_share: float) -> MetricRecord:
    """Held-out metrics over the sites that sent them, counts clipped like training weights.

    Not the inner strategy's: Flower's requires every reply to carry the same metric keys,
    and a site's release policy may send any subset.
    """
    counts = {
        m.metadata.src_node_id: float(_metrics(m)[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
        for m in ok
        if keys.NUM_EXAMPLES in _metrics(m)
    }
    capped = cap_weights(counts, max_share=max_share)
    contents = []
    for msg in ok:
        metrics = dict(_metrics(msg))
        if msg.metadata.src_node_id in capped:
            metrics[keys.NUM_EXAMPLES] = capped[msg.metadata.src_node_id]
        contents.append(RecordDict({keys.METRICS: MetricRecord(metrics)}))  # type: ignore[arg-type]
    return finite_weighted_mean(contents, keys.NUM_EXAMPLES)
