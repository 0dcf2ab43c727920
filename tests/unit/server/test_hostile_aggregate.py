"""A hostile site against the aggregate: its weight is signed and capped, its update bounded,
and no aggregate that is not finite and bounded ever becomes the global model."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from conftest import Federation, Site, global_model
from flwr.app import Message

from fedsafe.common import keys


def _w(arrays) -> np.ndarray:  # type: ignore[no-untyped-def]
    return arrays["w"].numpy()


def test_honest_sites_aggregate_by_their_signed_example_counts(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(Site("a", 100, step=0.1), Site("b", 150, step=0.2), Site("c", 100, step=0.4))
    model = fed.run()
    assert np.allclose(_w(model), (100 * 0.1 + 150 * 0.2 + 100 * 0.4) / 350)
    assert fed.ledger("round_aggregated")[0]["weights"] == {"a": 100.0, "b": 150.0, "c": 100.0}
    assert fed.errors() == ""


def test_a_signed_count_of_1e12_is_clipped_to_the_max_weight_share(
    federation: Callable[..., Federation],
) -> None:
    attacker = Site("mallory", 10**12, step=1.0)
    fed = federation(Site("a", 100), Site("b", 100), Site("c", 100), attacker)
    model = fed.run()
    # Without the cap the aggregate is the attacker's update (1.0); with it, at most half.
    assert np.allclose(_w(model), 0.5 * 1.0 + 0.5 * 0.1)
    assert fed.ledger("round_aggregated")[0]["weights"]["mallory"] == 300.0
    assert "site mallory: weight 1000000000000 clipped to 300" in fed.errors()


@pytest.mark.parametrize(
    ("attest", "metrics", "reason"),
    [
        ({}, {keys.NUM_EXAMPLES: math.inf}, "'num-examples' must be finite"),
        ({"num_examples": 1e308}, {keys.NUM_EXAMPLES: 1e308}, "num_examples 1e+308 is not an int"),
        ({"num_examples": 5000}, {}, "attested num_examples 5000.0 != reported num-examples 100.0"),
        ({"num_examples": None}, {}, "attested num_examples None is not an integer"),
        ({"num_examples": True}, {keys.NUM_EXAMPLES: 1.0}, "is not an integer"),
    ],
    ids=["inf-metric", "1e308", "unsigned-metric", "unsigned", "bool"],
)
def test_an_unsigned_or_unbounded_count_drops_the_update_and_the_round_goes_on(
    federation: Callable[..., Federation], attest: dict, metrics: dict, reason: str
) -> None:  # type: ignore[type-arg]
    fed = federation(
        Site("a", 100), Site("b", 100), Site("mallory", attest=attest, metrics=metrics)
    )
    model = fed.run()
    assert np.allclose(_w(model), 0.1)
    assert fed.strategy.stopped_at is None
    assert "site mallory: reply dropped" in fed.errors()
    assert reason in fed.errors()


def test_1e308_at_two_sites_neither_overflows_nor_zeroes_the_aggregate(
    federation: Callable[..., Federation],
) -> None:
    big = {"num_examples": 1e308}, {keys.NUM_EXAMPLES: 1e308}
    fed = federation(
        Site("a", 100),
        Site("b", 100),
        Site("m1", attest=big[0], metrics=big[1], step=5.0),
        Site("m2", attest=big[0], metrics=big[1], step=5.0),
    )
    model = fed.run()
    assert np.isfinite(_w(model)).all() and np.allclose(_w(model), 0.1)


@pytest.mark.parametrize("value", [1e30, float("nan"), float("inf")], ids=["1e30", "nan", "inf"])
def test_an_update_far_from_the_model_or_not_finite_is_dropped(
    federation: Callable[..., Federation], value: float
) -> None:
    fed = federation(Site("a", 100), Site("b", 100), Site("mallory", 100, step=value))
    model = fed.run()
    assert np.allclose(_w(model), 0.1)
    assert "site mallory: reply dropped" in fed.errors()


def test_the_update_norm_bound_is_the_configured_one(
    federation: Callable[..., Federation],
) -> None:
    # A step of 1.0 on 8 weights moves the model by sqrt(8) = 2.83.
    fed = federation(
        Site("a", step=0.1), Site("b", step=0.1), Site("m", step=1.0), max_update_norm=2.0
    )
    fed.run()
    assert "more than strategy.max_update_norm=2" in fed.errors()
    fed = federation(
        Site("a", step=0.1), Site("b", step=0.1), Site("m", step=1.0), max_update_norm=3.0
    )
    fed.run()
    assert "max_update_norm" not in fed.errors()


def test_a_non_finite_aggregate_is_never_adopted(federation: Callable[..., Federation]) -> None:
    # Four finite float32 updates near the float32 maximum: the median of an even count
    # averages the two middle ones and overflows to inf. The bound lets them through.
    start = global_model(3.0e38)
    sites = [Site(n, 100, step=0.0) for n in "abcd"]
    fed = federation(*sites, name="fedmedian", min_sites=3, max_update_norm=1e300)
    model = fed.run(rounds=2, initial=start)
    assert np.array_equal(_w(model), _w(start)), "the previous model must be kept"
    assert "aggregate refused, previous model kept" in fed.errors()
    assert not fed.ledger("round_aggregated")
    assert [s.trained for s in sites] == [[1, 2]] * 4  # the run goes on from the kept model


def test_an_aggregate_that_moves_too_far_is_refused_and_fedadam_state_rolled_back(
    federation: Callable[..., Federation],
) -> None:
    # Each update is small, but FedAdam with a huge server rate moves every weight by ~eta.
    fed = federation(
        Site("a", step=0.1),
        Site("b", step=0.1),
        name="fedadam",
        server_learning_rate=10.0,
        max_update_norm=2.0,
    )
    model = fed.run()
    assert np.array_equal(_w(model), _w(global_model()))
    assert "the aggregate moves the model by" in fed.errors()
    assert fed.strategy.inner.m_t is None  # type: ignore[attr-defined]


def test_a_node_answering_twice_counts_once(federation: Callable[..., Federation]) -> None:
    def twice(site: Site, msg: Message) -> list[Message]:
        return [Message(site.update(msg), reply_to=msg), Message(site.update(msg), reply_to=msg)]

    fed = federation(
        Site("a", 100, step=0.1),
        Site("b", 100, step=0.1),
        Site("m", 100, step=1.0, train_reply=twice),
    )
    model = fed.run()
    assert np.allclose(_w(model), (0.1 + 0.1 + 1.0) / 3)
    assert "site m: answered twice; only its first reply counts" in fed.errors()


def test_fedadam_keeps_the_models_dtype_so_the_next_round_counts(
    federation: Callable[..., Federation],
) -> None:
    # Flower's FedAdam returns float64 arrays; adopted as such, every float32 update of the
    # next round would be dropped as the wrong dtype (measured on main: round 2 lost).
    fed = federation(Site("a"), Site("b"), name="fedadam")
    model = fed.run(rounds=2)
    assert model["w"].numpy().dtype == np.float32
    assert [r["round"] for r in fed.ledger("round_aggregated")] == [1, 2]
    assert "reply dropped" not in fed.errors()


def test_a_count_beyond_2_53_cannot_even_be_signed_canonically() -> None:
    """RFC 8785 (the statement format) has no integer above 2**53: such a weight never verifies."""
    from fedsafe.common.attestation import sign_statement

    with pytest.raises(ValueError, match="safe integer"):
        sign_statement({"statement": "x", "num_examples": 2**60}, b"unused")
