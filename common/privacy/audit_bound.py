"""An empirical lower bound on epsilon from one training run (Steinke, Nasr, Jagielski 2023).

m canaries are each put in the training data with probability 1/2, independently. After
training, an auditor guesses "in" for the r_in canaries it scores highest, "out" for the r_out
it scores lowest, and abstains on the rest. If the training is (epsilon, delta)-DP, the number
of correct guesses v among r = r_in + r_out is stochastically dominated by
Binomial(r, e^eps / (1 + e^eps)), up to a delta term (their Theorem 5.2 / Proposition 5.7):

    P[V >= v] <= P[Bin(r, q) >= v] + 2 m delta max_{i in 1..v} P[v > Bin(r, q) >= v - i] / i.

The largest epsilon this rejects at the chosen confidence is the lower bound: any claim below it
is contradicted by the run. It is a *lower* bound: a small value does not prove privacy, a value
above the accountant's epsilon proves the training path leaks more than it claims.

The guess counts are fixed before the scores are seen and the confidence is split over them
(Bonferroni), so taking the best of them keeps the stated confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["AuditBound", "p_value", "epsilon_lower_bound", "guess_counts", "audit_guesses"]

_EPS_MAX = 50.0


def p_value(m: int, r: int, v: int, *, epsilon: float, delta: float) -> float:
    """P[at least v of r guesses correct] if the run were (epsilon, delta)-DP over m canaries."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1, got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(1.0, beta)
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[Bin = v-1], ..., P[Bin = 0]
    alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(1.0, beta + 2.0 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float, confidence: float) -> float:
    """The largest epsilon whose p-value for (m, r, v) is below 1 - confidence (0 if none)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    level = 1.0 - confidence
    if p_value(m, r, v, epsilon=0.0, delta=delta) > level:
        return 0.0
    if p_value(m, r, v, epsilon=_EPS_MAX, delta=delta) <= level:
        return _EPS_MAX
    low, high = 0.0, _EPS_MAX  # p-value grows with epsilon: bisect to 1e-6
    while high - low > 1e-6:
        mid = (low + high) / 2
        if p_value(m, r, v, epsilon=mid, delta=delta) <= level:
            low = mid
        else:
            high = mid
    return low


def guess_counts(m: int) -> tuple[int, ...]:
    """The guess counts tried, fixed by m alone: 2, 5, 10, 20, 50 and 100% of the canaries."""
    counts = {max(2, round(m * share)) for share in (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)}
    return tuple(sorted(c for c in counts if c <= m))


@dataclass(frozen=True)
class AuditBound:
    """The best of the pre-registered guess counts: r guesses, v correct, the bound it gives."""

    epsilon_lower_bound: float
    canaries: int
    guesses: int
    correct: int
    confidence: float
    delta: float


def audit_guesses(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    counts: Sequence[int] | None = None,
) -> AuditBound:
    """Guess half of each count "in" (highest scores) and half "out" (lowest), for each count.

    `scores`: higher means "looks trained on"; `included`: the secret coin flips. The
    confidence is divided over the counts, so the reported maximum holds at `confidence`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    if scores.shape != included.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and included {included.shape} must be 1-d, equal")
    if not np.all(np.isfinite(scores)):
        raise ValueError("canary scores must be finite")
    m = len(scores)
    tried = tuple(counts) if counts is not None else guess_counts(m)
    if not tried:
        raise ValueError(f"no guess count fits {m} canaries")
    each = 1.0 - (1.0 - confidence) / len(tried)
    order = np.argsort(-scores, kind="stable")  # highest first
    best = AuditBound(0.0, m, 0, 0, confidence, delta)
    for r in tried:
        r_in = r // 2
        r_out = r - r_in
        v = int(included[order[:r_in]].sum() + (~included[order[m - r_out :]]).sum())
        bound = epsilon_lower_bound(m, r, v, delta=delta, confidence=each)
        if bound > best.epsilon_lower_bound or best.guesses == 0:
            best = AuditBound(bound, m, r, v, confidence, delta)
    return best
