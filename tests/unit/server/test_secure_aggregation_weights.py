"""Under secure aggregation the weights are inside the sum: the coordinator's share cap is the
max_weight it announces, so a site that inflates its count at the roll call gains nothing."""

from __future__ import annotations

import pytest

from fedsafe.server.secure_aggregation import max_weight_for

HOSPITALS = {1: 241, 2: 239, 3: 101, 4: 157}


def test_honest_counts_under_the_cap_keep_the_largest_as_max_weight() -> None:
    assert max_weight_for(HOSPITALS, max_share=0.5) == 241


@pytest.mark.parametrize("claimed", [10**6, 2**53])
def test_an_inflated_count_weighs_at_most_the_share_cap(claimed: int) -> None:
    declared = {**HOSPITALS, 5: claimed}
    cap = max_weight_for(declared, max_share=0.5)
    # The liar weighs min(claimed, cap) = cap; the honest sites their own counts (all below cap).
    weights = {n: min(c, cap) for n, c in declared.items()}
    assert weights[5] / sum(weights.values()) <= 0.5 + 1e-9
    assert all(weights[n] == c for n, c in HOSPITALS.items())


def test_when_no_share_can_be_met_every_site_weighs_one() -> None:
    assert max_weight_for({1: 10, 2: 1000}, max_share=0.4) == 1.0
