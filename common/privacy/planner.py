"""Plan a site's noise before it trains: the steps it will take at the rate it will really use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from fedsafe.common.config import PrivacyConfig, TrainingConfig
from fedsafe.common.privacy.accountants import noise_for_target

__all__ = ["SitePlan", "plan_site"]


@dataclass(frozen=True)
class SitePlan:
    """Noise multiplier, real Poisson sample rate and steps per round for one site."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    planned_rounds: int
    planned_epsilon: float


@lru_cache(maxsize=256)
def plan_site(
    privacy: PrivacyConfig, training: TrainingConfig, *, n_train: int, rounds: int | None = None
) -> SitePlan:
    """Noise for the site's own size: given, or derived from the target for all planned rounds.

    Opacus' Poisson loader keeps the batch count of the plain loader, so the sample rate
    is 1 / ceil(n / batch_size) and one epoch is ceil(n / batch_size) steps. Cached: the
    noise search is the slow part, and every round of a run asks the same question.
    """
    batches = math.ceil(n_train / training.batch_size)
    sample_rate = 1.0 / batches
    steps_per_round = training.local_epochs * batches
    rounds = training.rounds if rounds is None else rounds
    total = steps_per_round * rounds
    if privacy.noise_multiplier is not None:
        from fedsafe.common.privacy.accountants import epsilon_for

        eps = epsilon_for(
            [(privacy.noise_multiplier, sample_rate, total)],
            delta=privacy.delta,
            accountant=privacy.accountant,
        )
        return SitePlan(privacy.noise_multiplier, sample_rate, steps_per_round, rounds, eps)
    assert privacy.target_epsilon is not None  # guaranteed by PrivacyConfig
    sigma, eps = noise_for_target(
        target_epsilon=privacy.target_epsilon,
        sample_rate=sample_rate,
        steps=total,
        delta=privacy.delta,
        accountant=privacy.accountant,
    )
    return SitePlan(sigma, sample_rate, steps_per_round, rounds, eps)
