"""Bounds on what one site can do to the aggregate: its weight share, how far its update moves."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord

from fedsafe.server.validation import MalformedReplyError

__all__ = ["cap_weights", "distance", "check_update_norm"]


def distance(arrays: ArrayRecord, reference: ArrayRecord) -> float:
    """L2 distance between two models of the same shape, in float64; inf if any entry is not
    finite (NaN included), so no bound ever admits it."""
    total = 0.0
    for name, ref in reference.items():
        diff = arrays[name].numpy().astype(np.float64) - ref.numpy().astype(np.float64)
        total += float(np.sum(np.square(diff)))
    return math.sqrt(total) if math.isfinite(total) else math.inf


def check_update_norm(arrays: ArrayRecord, reference: ArrayRecord, *, max_norm: float) -> float:
    """The update's distance from the global model; MalformedReplyError above `max_norm`."""
    norm = distance(arrays, reference)
    if not norm <= max_norm:
        raise MalformedReplyError(
            f"update moves the model by {norm:.4g} (L2), more than "
            f"strategy.max_update_norm={max_norm:g}"
        )
    return norm


def cap_weights(weights: Mapping[int, float], *, max_share: float) -> dict[int, float]:
    """Clip the largest weights so that no site holds more than `max_share` of the round's total.

    Water-filling: the k largest sites all get the same weight c, solved from
    c = max_share * (k * c + rest), `rest` being the others' sum. When the share cannot be met
    (n * max_share <= 1) every site weighs the same, the smallest largest share there is.
    Weights under the cap are untouched: a federation with no dominant site aggregates as before.
    """
    values = {node: float(w) for node, w in weights.items()}
    ordered = sorted(values.values(), reverse=True)
    if not ordered or ordered[0] <= max_share * sum(ordered):
        return values
    if len(ordered) * max_share <= 1.0:
        return {node: 1.0 for node in values}
    for k in range(1, len(ordered)):
        if k * max_share >= 1.0:
            break
        cap = max_share * sum(ordered[k:]) / (1.0 - k * max_share)
        if ordered[k] <= cap <= ordered[k - 1]:
            return {node: min(w, cap) for node, w in values.items()}
    return {node: 1.0 for node in values}  # numerically unreachable; equal weights are safe
