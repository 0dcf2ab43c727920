"""Known answers for the weight cap and the update distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedsafe.server.bounds import cap_weights, check_update_norm, distance
from fedsafe.server.validation import MalformedReplyError


@pytest.mark.parametrize(
    ("weights", "share", "expected"),
    [
        ({1: 243, 2: 234, 3: 160, 4: 98}, 0.5, {1: 243, 2: 234, 3: 160, 4: 98}),
        ({1: 10**12, 2: 100, 3: 100, 4: 100}, 0.5, {1: 300, 2: 100, 3: 100, 4: 100}),
        ({1: 1000, 2: 900, 3: 10, 4: 10}, 0.3, {1: 15, 2: 15, 3: 10, 4: 10}),
        ({1: 700, 2: 300}, 0.5, {1: 1, 2: 1}),
        ({1: 700, 2: 300}, 1.0, {1: 700, 2: 300}),
        ({1: 5, 2: 5, 3: 5}, 0.2, {1: 1, 2: 1, 3: 1}),
    ],
    ids=["heart", "1e12", "two-large", "two-sites", "no-cap", "infeasible"],
)
def test_cap_weights(weights: dict, share: float, expected: dict) -> None:  # type: ignore[type-arg]
    capped = cap_weights(weights, max_share=share)
    assert capped == pytest.approx({k: float(v) for k, v in expected.items()})
    total = sum(capped.values())
    assert max(capped.values()) <= max(share, 1 / len(weights)) * total + 1e-9


def _rec(value: float) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full((4,), value, dtype=np.float32))})


def test_distance_is_computed_in_float64_and_never_hides_a_non_finite_value() -> None:
    assert distance(_rec(3e38), _rec(0.0)) == pytest.approx(6e38)
    assert distance(_rec(1.0), _rec(0.0)) == pytest.approx(2.0)
    assert distance(_rec(float("nan")), _rec(0.0)) == math.inf
    with pytest.raises(MalformedReplyError, match="more than strategy.max_update_norm=100"):
        check_update_norm(_rec(float("nan")), _rec(0.0), max_norm=100.0)
    assert check_update_norm(_rec(1.0), _rec(0.0), max_norm=2.0) == pytest.approx(2.0)
