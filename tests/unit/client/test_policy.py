"""SitePolicy: defaults, strict loading, and one message check per bad field."""

from __future__ import annotations

import dataclasses
import math

import pytest

from fedsafe.client.policy import POLICY_KEYS, SitePolicy, load_policy
from fedsafe.common.errors import ConfigError

SOURCE = "/sites/cleveland/site.yaml"


def test_defaults_and_purposes() -> None:
    policy = SitePolicy(max_epsilon=3.0)

    assert (policy.delta, policy.accountant, policy.min_noise_multiplier) == (1e-5, "rdp", 0.5)
    assert policy.allows_purpose("anything") and policy.allows_purpose(None)
    assert not SitePolicy(max_epsilon=1, allowed_purposes=("research",)).allows_purpose("ads")


def test_policy_is_frozen() -> None:
    policy = SitePolicy(max_epsilon=3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_epsilon = 100.0  # type: ignore[misc]


def test_load_policy_reads_every_field() -> None:
    policy = load_policy(
        {
            "max_epsilon": "4.5",
            "delta": 1e-6,
            "accountant": "prv",
            "min_noise_multiplier": 0.8,
            "allowed_purposes": ["research", "quality"],
        },
        source=SOURCE,
    )

    assert policy == SitePolicy(
        max_epsilon=4.5,
        delta=1e-6,
        accountant="prv",
        min_noise_multiplier=0.8,
        allowed_purposes=("research", "quality"),
    )
    assert set(POLICY_KEYS) == {f.name for f in dataclasses.fields(SitePolicy)}


def test_comma_separated_purposes() -> None:
    policy = load_policy({"max_epsilon": 1, "allowed_purposes": "a, b"}, source=SOURCE)
    assert policy.allowed_purposes == ("a", "b")


BAD = [
    ("max_epsilon", 0, "a finite float > 0"),
    ("max_epsilon", -1.0, "a finite float > 0"),
    ("max_epsilon", math.inf, "a finite float > 0"),
    ("max_epsilon", "lots", "a number"),
    ("max_epsilon", True, "a number"),
    ("delta", 0.0, "a float in (0, 1)"),
    ("delta", 1.5, "a float in (0, 1)"),
    ("accountant", "gdp", "one of ['rdp', 'prv']"),
    ("min_noise_multiplier", -0.1, "a finite float >= 0"),
    ("allowed_purposes", 5, "a list of non-empty strings"),
    ("allowed_purposes", ["research", ""], "a list of non-empty strings"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD)
def test_each_bad_field_is_named_with_value_allowed_and_source(
    key: str, value: object, allowed: str
) -> None:
    mapping: dict[str, object] = {"max_epsilon": 3.0, key: value}

    with pytest.raises(ConfigError) as info:
        load_policy(mapping, source=SOURCE)

    message = str(info.value)
    assert info.value.key == f"site_policy.{key}"
    assert f"site_policy.{key}" in message
    assert allowed in message
    assert SOURCE in message
    shown = tuple(value) if key == "allowed_purposes" and isinstance(value, list) else value
    assert repr(shown) in message


def test_missing_cap_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"site_policy\.max_epsilon.*required") as info:
        load_policy({"delta": 1e-5}, source=SOURCE)
    assert SOURCE in str(info.value)


def test_unknown_key_is_an_error_not_an_uncapped_site() -> None:
    with pytest.raises(ConfigError, match="max_epsilion") as info:
        load_policy({"max_epsilon": 1.0, "max_epsilion": 9.0}, source=SOURCE)
    assert "max_epsilon" in info.value.allowed and SOURCE in str(info.value)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="a mapping"):
        load_policy(["max_epsilon", 1.0], source=SOURCE)  # type: ignore[arg-type]


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match=r"site_policy\.delta"):
        SitePolicy(max_epsilon=1.0, delta=2.0)
