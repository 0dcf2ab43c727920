"""q-FFL's reweighting toward the worst-served sites, through the real strategy, and a hostile
site that reports a huge held-out loss to take the round."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from conftest import Federation, Site

from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import ConfigError
from fedsafe.server.aggregate import fairness_factors


def _eval(loss: float) -> dict[str, float]:
    return {
        keys.NUM_EXAMPLES: 50.0,
        keys.LOSS: loss,
        keys.ACCURACY: 0.8,
        keys.BALANCED_ACCURACY: 0.75,
        keys.AUROC: 0.85,
    }


def _round2_weights(fed: Federation) -> dict[str, float]:
    fed.run(rounds=2)
    return dict(fed.ledger("round_aggregated")[1]["weights"])


def test_round_2_weighs_each_site_by_its_released_loss_to_the_q(
    federation: Callable[..., Federation],
) -> None:
    sites = [Site("a", 100, eval_metrics=_eval(0.2)), Site("b", 100, eval_metrics=_eval(0.6))]
    weights = _round2_weights(federation(*sites, fairness_q=1.0, max_weight_share=0.9))
    # median loss 0.4: a weighs 100 * 0.5, b weighs 100 * 1.5
    assert weights == pytest.approx({"a": 50.0, "b": 150.0})


def test_q_0_is_plain_weighting(federation: Callable[..., Federation]) -> None:
    sites = [Site("a", 100, eval_metrics=_eval(0.2)), Site("b", 100, eval_metrics=_eval(0.6))]
    assert _round2_weights(federation(*sites, max_weight_share=0.9)) == {"a": 100.0, "b": 100.0}


def test_round_1_has_no_released_loss_and_weighs_as_usual(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(
        Site("a", 100, eval_metrics=_eval(0.2)),
        Site("b", 300, eval_metrics=_eval(0.6)),
        fairness_q=2.0,
        max_weight_share=0.9,
    )
    fed.run(rounds=1)
    assert fed.ledger("round_aggregated")[0]["weights"] == {"a": 100.0, "b": 300.0}


def test_a_site_reporting_a_huge_loss_gains_at_most_the_share_cap(
    federation: Callable[..., Federation],
) -> None:
    honest = [Site(n, 100, step=0.1, eval_metrics=_eval(0.4)) for n in ("a", "b", "c")]
    mallory = Site("mallory", 100, step=1.0, eval_metrics=_eval(1e30))
    fed = federation(*honest, mallory, fairness_q=5.0)  # max_weight_share 0.5
    model = fed.run(rounds=2)
    weights = fed.ledger("round_aggregated")[1]["weights"]
    share = weights["mallory"] / sum(weights.values())
    assert share == pytest.approx(0.5)  # the cap, not the whole round
    assert np.all(np.isfinite(model["w"].numpy()))


def test_the_loss_ratio_is_bounded_and_one_huge_loss_does_not_shrink_the_others() -> None:
    losses = {"a": 1e-12, "b": 1.0, "c": 1.0, "mallory": 1e12}
    factors = fairness_factors(losses, dict(enumerate(losses)), q=1)
    assert factors == {0: pytest.approx(0.1), 1: 1.0, 2: 1.0, 3: 10.0}


def test_a_site_without_a_released_loss_weighs_as_the_median() -> None:
    factors = fairness_factors({"a": 0.2, "b": None}, {1: "a", 2: "b", 3: "c"}, q=1)
    assert factors == {1: 1.0, 2: 1.0, 3: 1.0}


@pytest.mark.parametrize(
    "other",
    [
        {"security": {"secure_aggregation": True}},
        {"privacy": {"client_level": {"mode": "central"}}},
    ],
    ids=["secure-aggregation", "client-level-dp"],
)
def test_fairness_weights_are_refused_where_weights_cannot_change(other: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as caught:
        from_dict(ExperimentConfig, {"strategy": {"fairness_q": 1.0}, **other})
    assert caught.value.key == "strategy.fairness_q"
