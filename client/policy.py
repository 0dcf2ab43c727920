"""What this site allows: its privacy cap, minimum noise and permitted purposes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fedsafe.common.config import ACCOUNTANTS
from fedsafe.common.errors import ConfigError

__all__ = ["SitePolicy", "load_policy", "POLICY_KEYS"]


@dataclass(frozen=True)
class SitePolicy:
    """A site's own limits, enforced by the site whatever the server asks.

    `max_epsilon` is the cap on the epsilon composed over every round of every run on a
    dataset, at `delta` with `accountant`; the same (delta, accountant) must be used for
    every check, or spends measured in different units would be compared.
    An empty `allowed_purposes` means any purpose is allowed.
    """

    max_epsilon: float
    delta: float = 1e-5
    accountant: str = "rdp"
    min_noise_multiplier: float = 0.5
    allowed_purposes: tuple[str, ...] = ()
    # Declared class prevalence (one probability per class): the only class weights DP-SGD
    # may use, since weights from the site's exact label counts would depend on every record.
    class_prevalence: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _validate(self, source=None)

    def allows_purpose(self, purpose: str | None) -> bool:
        """True when the policy names no purposes, or names this one."""
        return not self.allowed_purposes or purpose in self.allowed_purposes


POLICY_KEYS = tuple(f.name for f in fields(SitePolicy))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate(policy: SitePolicy, *, source: str | None) -> None:
    """Range checks shared by the constructor and the loader (which adds the source file)."""

    def fail(key: str, value: object, allowed: str) -> ConfigError:
        return ConfigError(f"site_policy.{key}", value, allowed, source=source)

    eps = policy.max_epsilon
    if not (_is_number(eps) and eps > 0 and math.isfinite(eps)):
        raise fail("max_epsilon", eps, "a finite float > 0")
    if not (_is_number(policy.delta) and 0 < policy.delta < 1):
        raise fail("delta", policy.delta, "a float in (0, 1), typically < 1 / n_records")
    if policy.accountant not in ACCOUNTANTS:
        raise fail("accountant", policy.accountant, f"one of {list(ACCOUNTANTS)}")
    sigma = policy.min_noise_multiplier
    if not (_is_number(sigma) and sigma >= 0 and math.isfinite(sigma)):
        raise fail("min_noise_multiplier", sigma, "a finite float >= 0")
    purposes = policy.allowed_purposes
    if not (isinstance(purposes, tuple) and all(isinstance(p, str) and p for p in purposes)):
        raise fail("allowed_purposes", purposes, "a list of non-empty strings (empty = any)")
    prevalence = policy.class_prevalence
    if prevalence and not (
        isinstance(prevalence, tuple)
        and all(_is_number(p) and 0 < p < 1 for p in prevalence)
        and abs(sum(prevalence) - 1) < 1e-6
    ):
        raise fail(
            "class_prevalence", prevalence, "one probability in (0, 1) per class, summing to 1"
        )


def _coerce_float(key: str, value: Any, source: str) -> float:
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"site_policy.{key}", value, "a number", source=source)


def load_policy(mapping: Mapping[str, Any], *, source: str) -> SitePolicy:
    """Build a SitePolicy from a parsed site file, strictly.

    Unknown keys are errors (a typo such as `max_epsilion` must not silently leave the
    site uncapped); every message names the key, the value, what is allowed and `source`.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError("site_policy", mapping, "a mapping of policy keys", source=source)
    unknown = sorted(set(mapping) - set(POLICY_KEYS))
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"site_policy.{key}", mapping[key], f"one of {list(POLICY_KEYS)}", source=source
        )
    if "max_epsilon" not in mapping:
        raise ConfigError(
            "site_policy.max_epsilon", None, "a finite float > 0 (required)", source=source
        )
    kwargs: dict[str, Any] = {}
    for key in ("max_epsilon", "delta", "min_noise_multiplier"):
        if key in mapping:
            kwargs[key] = _coerce_float(key, mapping[key], source)
    if "accountant" in mapping:
        kwargs["accountant"] = mapping["accountant"]
    if "allowed_purposes" in mapping:
        value = mapping["allowed_purposes"]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                "site_policy.allowed_purposes",
                value,
                "a list of non-empty strings (empty = any)",
                source=source,
            )
        kwargs["allowed_purposes"] = tuple(value)
    if "class_prevalence" in mapping:
        value = mapping["class_prevalence"]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                "site_policy.class_prevalence", value, "a list of probabilities", source=source
            )
        kwargs["class_prevalence"] = tuple(
            _coerce_float("class_prevalence", v, source) for v in value
        )
    try:
        return SitePolicy(**kwargs)
    except ConfigError as err:
        raise ConfigError(err.key, err.value, err.allowed, source=source) from None
