"""Cross-checks of a verified attestation against the reported metrics and the run's DP terms.

A signature only proves who said it; these checks make what was said consistent: the weight
is the signed example count, the privacy numbers agree with each other and with the metrics,
and the epsilon is at least what one round at the attested noise, rate and steps costs.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from flwr.app import MetricRecord

from fedsafe.common import keys
from fedsafe.common.config import PrivacyConfig
from fedsafe.common.errors import FedsafeError
from fedsafe.common.privacy.accountants import epsilon_for
from fedsafe.server.validation import RejectedUpdateError

__all__ = ["check_attested", "MAX_EXAMPLES", "one_round_epsilon"]

MAX_EXAMPLES = 2**53  # an example count a float metric holds exactly; anything above is a lie
_REL = 1e-9  # float round trip of a metric against the signed JSON number
_EPS_SLACK = 1e-6  # accountant evaluations of the same charge agree to this relative error


def _number(site: str, signed: dict[str, Any], name: str) -> float:
    value = signed.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RejectedUpdateError(f"site '{site}': attested {name} {value!r} is not a number")
    if not math.isfinite(value):
        raise RejectedUpdateError(f"site '{site}': attested {name} {value!r} is not finite")
    if value < 0:
        raise RejectedUpdateError(f"site '{site}': attested {name} {value!r} is negative")
    return float(value)


def _same(site: str, name: str, attested: float, metric_name: str, metrics: MetricRecord) -> None:
    reported = float(metrics[metric_name])  # type: ignore[arg-type]
    if not abs(attested - reported) <= _REL * max(1.0, abs(reported)):
        raise RejectedUpdateError(
            f"site '{site}': attested {name} {attested!r} != reported {metric_name} {reported!r}"
        )


def _count(site: str, signed: dict[str, Any], name: str) -> int:
    value = signed.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RejectedUpdateError(f"site '{site}': attested {name} {value!r} is not an integer")
    return value


@lru_cache(maxsize=1024)
def one_round_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str
) -> float:
    """Epsilon of exactly one round at these parameters: a floor under any cumulative spend."""
    return epsilon_for([(noise_multiplier, sample_rate, steps)], delta=delta, accountant=accountant)


def check_attested(
    site: str, signed: dict[str, Any], metrics: MetricRecord, privacy: PrivacyConfig
) -> int:
    """Raise RejectedUpdateError unless the signed numbers are sound; return the signed weight."""
    examples = _count(site, signed, "num_examples")
    if not 0 < examples <= MAX_EXAMPLES:
        raise RejectedUpdateError(
            f"site '{site}': attested num_examples {examples} is not in [1, 2**53]"
        )
    _same(site, "num_examples", float(examples), keys.NUM_EXAMPLES, metrics)
    steps = _count(site, signed, "steps")
    if steps < 0:
        raise RejectedUpdateError(f"site '{site}': attested steps {steps} is negative")
    _same(site, "steps", float(steps), keys.STEPS, metrics)
    if signed.get("epsilon") is None:
        if privacy.enabled:
            raise RejectedUpdateError(
                f"site '{site}': attested epsilon is null in a run with privacy enabled"
            )
        return examples
    epsilon = _number(site, signed, "epsilon")
    _same(site, "epsilon", epsilon, keys.EPSILON, metrics)
    if not privacy.enabled:
        return examples
    delta = _number(site, signed, "delta")
    if delta != privacy.delta:
        raise RejectedUpdateError(
            f"site '{site}': attested delta {delta!r} != the run's privacy.delta {privacy.delta!r}"
        )
    _same(site, "delta", delta, keys.DELTA, metrics)
    noise = _number(site, signed, "noise_multiplier")
    _same(site, "noise_multiplier", noise, keys.NOISE_MULTIPLIER, metrics)
    rate = _number(site, signed, "sample_rate")
    if rate > 1:
        raise RejectedUpdateError(f"site '{site}': attested sample_rate {rate!r} is above 1")
    _same(site, "sample_rate", rate, keys.SAMPLE_RATE, metrics)
    try:
        floor = one_round_epsilon(noise, rate, steps, delta, privacy.accountant)
    except FedsafeError as err:
        raise RejectedUpdateError(
            f"site '{site}': the attested noise, rate and steps have no computable epsilon ({err})"
        ) from None
    if epsilon < floor * (1 - _EPS_SLACK):
        raise RejectedUpdateError(
            f"site '{site}': attested epsilon {epsilon:.6g} is below {floor:.6g}, the cost of "
            f"this round alone at noise {noise:g}, sample rate {rate:g}, {steps} steps "
            f"({privacy.accountant}, delta={delta:g})"
        )
    return examples
