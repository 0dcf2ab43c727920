"""What replies may do to the model: clipped weights, a checked aggregate, held-out means."""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Mapping

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
    "fairness_factors",
    "uniform_weights",
]


class AggregateRejectedError(MalformedReplyError):
    """The round's aggregate is not finite or moved too far; the previous model is kept."""


def _metrics(msg: Message) -> MetricRecord:
    return msg.content.metric_records[keys.METRICS]


def capped_weights(
    ok: list[Message], *, max_share: float, factors: Mapping[int, float] | None = None
) -> tuple[dict[int, float], dict[int, int]]:
    """Set each update's weight to its signed example count (times its fairness factor)
    clipped to `max_share` of the total.

    The counts were checked equal to the signed attestation before; the weight Flower reads
    (`num-examples`) is overwritten in place. Returns (weight per node, signed count of each
    node whose weight was clipped).
    """
    signed = {
        m.metadata.src_node_id: int(_metrics(m)[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
        for m in ok
    }
    wanted = {n: w * (factors or {}).get(n, 1.0) for n, w in signed.items()}
    capped = cap_weights(wanted, max_share=max_share)
    for msg in ok:
        _metrics(msg)[keys.NUM_EXAMPLES] = capped[msg.metadata.src_node_id]
    return capped, {n: signed[n] for n, w in wanted.items() if capped[n] < w}


# A site's loss ratio counts within [1/10, 10] of the median: a site that reports a huge held-out
# loss gains at most 10**q in weight before the share cap, never the round.
_RATIO_BOUNDS = (0.1, 10.0)


def fairness_factors(
    losses: Mapping[str, float | None], sites: Mapping[int, str], *, q: float
) -> dict[int, float] | None:
    """q-FFL's reweighting (Li, Sanjabi, Beirami, Smith, "Fair Resource Allocation in Federated
    Learning", ICLR 2020), in its one-step form: each site's weight times (F_s / median F)^q.

    F_s is the held-out loss the site last released for the current global model, under its
    release policy: reweighting is post-processing of values already released, so it costs no
    privacy. A site without a released loss (its first round, release policy `off`) weighs as
    the median. q = 0 is plain weighting; larger q pulls the model toward the worst-served sites.
    The median, not the mean, is the reference: one site reporting a huge loss cannot shrink
    every other site's factor (it is a site-reported figure, so it is bounded, not trusted).
    """
    if q == 0:
        return None
    known = {
        node: float(value)
        for node, site in sites.items()
        if (value := losses.get(site)) is not None and math.isfinite(value) and value > 0
    }
    if not known:
        return None
    middle = statistics.median(known.values())
    low, high = _RATIO_BOUNDS
    return {node: min(max(known.get(node, middle) / middle, low), high) ** q for node in sites}


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
