"""The federation planner: per-round epsilons, caps, warnings and targets never exceeded."""

from __future__ import annotations

import json
import math

import pytest

from fedsafe.common.config import PrivacyConfig, TrainingConfig
from fedsafe.common.privacy.accountants import Charge, epsilon_for
from fedsafe.common.privacy.plan_table import (
    expected_rounds,
    format_plan,
    plan_federation,
    plan_to_json,
)
from fedsafe.common.privacy.planner import plan_site

SITES = {"cleveland": 243, "hungary": 234, "va": 160, "switzerland": 98}
COMMON = dict(rounds=10, local_epochs=2, batch_size=32, delta=1e-5, accountant="rdp")


def test_per_round_epsilons_increase_and_equal_the_cumulative_history() -> None:
    plan = plan_federation(sites=SITES, target_epsilon=3.0, **COMMON)

    for row in plan.sites:
        eps = row.epsilon_after_round
        assert len(eps) == 10
        assert all(a < b for a, b in zip(eps, eps[1:], strict=False))
        one_round = Charge(row.noise_multiplier, row.sample_rate, row.steps_per_round)
        for j, value in enumerate(eps, start=1):
            assert value == pytest.approx(epsilon_for([one_round] * j, delta=1e-5), rel=1e-12)


def test_sample_rate_and_steps_are_the_site_planner_s() -> None:
    plan = plan_federation(sites=SITES, noise_multiplier=1.2, **COMMON)

    for row in plan.sites:
        expect = plan_site(
            PrivacyConfig(target_epsilon=None, noise_multiplier=1.2),
            TrainingConfig(rounds=10, local_epochs=2, batch_size=32),
            n_train=row.n_train,
        )
        assert (row.sample_rate, row.steps_per_round) == (
            expect.sample_rate,
            expect.steps_per_round,
        )
        assert row.epsilon_after_round[-1] == pytest.approx(expect.planned_epsilon, rel=1e-12)


@pytest.mark.parametrize("participation", [1.0, 0.5, 0.34])
@pytest.mark.parametrize("target", [0.5, 8.0])
def test_noise_derived_for_a_target_never_exceeds_it(participation: float, target: float) -> None:
    sites = {"cleveland": 243, "switzerland": 98}
    plan = plan_federation(
        sites=sites, target_epsilon=target, participation=participation, **COMMON
    )

    for row in plan.sites:
        assert row.expected_rounds == math.ceil(participation * 10)
        assert row.expected_epsilon <= target
        assert row.expected_epsilon >= 0.9 * target  # and not wastefully far below it


def test_prior_spend_is_composed_not_added() -> None:
    prior = [Charge(2.0, 0.05, 40)]
    plan = plan_federation(
        sites={"cleveland": 243}, target_epsilon=4.0, prior_spend={"cleveland": prior}, **COMMON
    )

    (row,) = plan.sites
    (fresh,) = plan_federation(sites={"cleveland": 243}, target_epsilon=4.0, **COMMON).sites
    assert 0 < row.prior_epsilon == epsilon_for(prior, delta=1e-5) < 4.0
    assert row.noise_multiplier == fresh.noise_multiplier  # the target is this run's spend
    assert row.expected_epsilon > fresh.expected_epsilon
    one = Charge(row.noise_multiplier, row.sample_rate, row.steps_per_round)
    assert row.epsilon_after_round[2] == pytest.approx(
        epsilon_for([*prior, one, one, one], delta=1e-5), rel=1e-12
    )


def test_cap_round_detected_and_warned() -> None:
    plan = plan_federation(
        sites={"cleveland": 243, "va": 160},
        target_epsilon=3.0,
        caps={"va": 2.0, "cleveland": 10.0},
        **COMMON,
    )

    cleveland, va = plan.sites
    assert cleveland.cap_round is None and cleveland.warnings == ()
    j = va.cap_round
    assert j is not None and 1 < j <= va.expected_rounds
    assert va.epsilon_after_round[j - 1] > 2.0 >= va.epsilon_after_round[j - 2]
    (warning,) = plan.warnings
    assert "'va'" in warning and "max_epsilon=2" in warning and f"round {j} of 10" in warning


def test_cap_beyond_expected_rounds_is_shown_without_warning() -> None:
    plan = plan_federation(
        sites={"va": 160}, target_epsilon=3.0, participation=0.5, caps={"va": 3.0}, **COMMON
    )

    (va,) = plan.sites
    assert va.expected_rounds == 5 and va.cap_round is not None and va.cap_round > 5
    assert plan.warnings == ()


def test_prior_spend_over_the_cap_stops_the_site_at_its_first_round() -> None:
    plan = plan_federation(
        sites={"va": 160},
        target_epsilon=1.0,
        caps={"va": 2.0},
        prior_spend={"va": [Charge(0.8, 0.2, 200)]},
        **COMMON,
    )

    (va,) = plan.sites
    assert va.prior_epsilon > 2.0 and va.cap_round == 1
    assert va.epsilon_after_round[0] > va.prior_epsilon
    assert "refuses its joined round 1" in va.warnings[0]


def test_format_and_json() -> None:
    plan = plan_federation(
        sites=SITES,
        target_epsilon=3.0,
        participation={"va": 0.5},
        caps={"switzerland": 2.0},
        **COMMON,
    )

    text = format_plan(plan)
    data = plan_to_json(plan)

    header = text.splitlines()[1]
    for column in ("site", "noise", "eps@exp", "cap round"):
        assert column in header
    for site in SITES:
        assert f"  {site}: " in text
    assert "warning: site 'switzerland'" in text
    assert json.loads(json.dumps(data)) == data
    assert [s["site"] for s in data["sites"]] == list(SITES)
    va = next(s for s in data["sites"] if s["site"] == "va")
    assert va["expected_rounds"] == 5 and len(va["epsilon_after_round"]) == 10
    assert data["warnings"] == list(plan.warnings)


def test_expected_rounds() -> None:
    assert [expected_rounds(p, 10) for p in (0.0, 0.01, 0.3, 0.5, 1.0)] == [0, 1, 3, 5, 10]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(target_epsilon=3.0, noise_multiplier=1.0), "exactly one"),
        (dict(target_epsilon=3.0, caps={"nowhere": 1.0}), "unknown site"),
        (dict(target_epsilon=3.0, participation={"nowhere": 1.0}), "unknown site"),
        (dict(target_epsilon=3.0, participation=1.5), r"\[0, 1\]"),
        (dict(target_epsilon=3.0, caps={"va": -1.0}), "cap for site 'va'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_federation(sites={"va": 160}, **COMMON, **kwargs)  # type: ignore[arg-type]
