"""A site's release policy: what may leave it besides its DP update, and in what form.

Evaluation metrics on held-out rows are exact statistics of private records: a coordinator
that sends a crafted model can read counts out of them. So the site decides:
- `exact` (a simulation's default);
- `rounded`: counts to a multiple of `count_rounding`, suppressed below `min_count`, accuracy
  from the rounded counts, balanced accuracy and AUROC to `decimals`, no loss (a crafted model
  sets the loss's scale and reads counts out of any rounding);
- `dp`: a Gaussian mechanism on the counts, charged to the same budget;
- `off` (a deployed site's default).
Training loss leaves only under `exact`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedsafe.common import keys
from fedsafe.common.errors import ConfigError

__all__ = [
    "ReleasePolicy",
    "EvalCounts",
    "RELEASE_MODES",
    "DP_EVAL_SENSITIVITY",
    "release_count",
    "release_evaluation",
    "DEPLOYED_DEFAULT",
]

RELEASE_MODES = ("exact", "rounded", "dp", "off")
# The DP evaluation query is (correct predictions, rows, clipped loss sum / loss_clip); adding
# or removing one held-out record moves each coordinate by at most 1: L2 sensitivity sqrt(3).
DP_EVAL_SENSITIVITY = math.sqrt(3.0)


@dataclass(frozen=True)
class ReleasePolicy:
    """What the site releases besides its DP update; checked by the site, whatever is asked."""

    evaluation: Literal["exact", "rounded", "dp", "off"] = "exact"
    decimals: int = 1
    min_count: int = 10
    count_rounding: int = 10
    eval_noise_multiplier: float = 20.0
    loss_clip: float = 10.0
    # Lifetime limit on `exact`/`rounded` evaluations per data set (None: none). Each is a
    # non-DP disclosure, and a coordinator can buy rounds cheaply (much noise, one step) to
    # evaluate crafted models; `dp` evaluations are charged to the budget instead.
    max_evaluations: int | None = None

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, value: object, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"release.{key}", value, allowed)

        check(self.evaluation in RELEASE_MODES, "evaluation", self.evaluation, str(RELEASE_MODES))
        check(0 <= self.decimals <= 6, "decimals", self.decimals, "an integer in 0..6")
        check(self.min_count >= 1, "min_count", self.min_count, "an integer >= 1")
        check(self.count_rounding >= 1, "count_rounding", self.count_rounding, "an integer >= 1")
        check(
            math.isfinite(self.eval_noise_multiplier) and self.eval_noise_multiplier > 0,
            "eval_noise_multiplier",
            self.eval_noise_multiplier,
            "a finite float > 0",
        )
        check(
            self.max_evaluations is None or self.max_evaluations >= 0,
            "max_evaluations",
            self.max_evaluations,
            "an integer >= 0, or null for no limit",
        )
        check(
            math.isfinite(self.loss_clip) and self.loss_clip > 0,
            "loss_clip",
            self.loss_clip,
            "a finite float > 0",
        )

    @property
    def releases_training_loss(self) -> bool:
        return self.evaluation == "exact"


DEPLOYED_DEFAULT = ReleasePolicy(evaluation="off", max_evaluations=100)


def release_count(policy: ReleasePolicy, count: int) -> int | None:
    """A count as it may leave: exact under `exact`, else rounded and suppressed if small."""
    if policy.evaluation == "exact":
        return int(count)
    if count < policy.min_count:
        return None
    step = policy.count_rounding
    return int(max(step, step * round(count / step)))


@dataclass(frozen=True)
class EvalCounts:
    """The raw held-out statistics a site computes before its policy decides what leaves."""

    n: int
    correct: int
    loss_sum_clipped: float  # sum of min(loss, loss_clip)
    loss: float
    accuracy: float
    balanced_accuracy: float
    auroc: float


def _rounded(value: float, decimals: int) -> float:
    return value if not math.isfinite(value) else round(value, decimals)


def release_evaluation(
    policy: ReleasePolicy, counts: EvalCounts, gaussian: Any | None = None
) -> dict[str, float]:
    """The metrics that may leave, keyed by wire name; `gaussian(n)` draws N(0,1) for `dp`.

    Under `dp` only the three noised sums leave (accuracy and loss are computed from them):
    balanced accuracy and AUROC have no small sensitivity and are not released.
    """
    mode = policy.evaluation
    if mode == "off":
        return {}
    if mode == "exact":
        return {
            keys.NUM_EXAMPLES: float(counts.n),
            keys.LOSS: counts.loss,
            keys.ACCURACY: counts.accuracy,
            keys.BALANCED_ACCURACY: counts.balanced_accuracy,
            keys.AUROC: counts.auroc,
        }
    if mode == "rounded":
        n = release_count(policy, counts.n)
        if n is None:
            return {}
        d = policy.decimals
        step = policy.count_rounding
        correct = step * round(counts.correct / step)  # accuracy no finer than the counts
        # No loss: its scale is the model's, so a crafted model reads counts out of any rounding.
        return {
            keys.NUM_EXAMPLES: float(n),
            keys.ACCURACY: _rounded(min(1.0, correct / n), d),
            keys.BALANCED_ACCURACY: _rounded(counts.balanced_accuracy, d),
            keys.AUROC: _rounded(counts.auroc, d),
        }
    if gaussian is None:
        raise ValueError("dp release needs the site's Gaussian source")
    std = policy.eval_noise_multiplier * DP_EVAL_SENSITIVITY
    noise = np.asarray(gaussian(3), dtype=np.float64) * std
    n = max(1.0, counts.n + noise[0])
    correct = min(max(0.0, counts.correct + noise[1]), n)
    loss_sum = max(0.0, counts.loss_sum_clipped / policy.loss_clip + noise[2]) * policy.loss_clip
    return {
        keys.NUM_EXAMPLES: float(round(n)),
        keys.ACCURACY: float(correct / n),
        keys.LOSS: float(loss_sum / n),
    }
