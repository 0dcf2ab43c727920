"""Plan a site's noise before it trains: the steps it will take at the rate it will really use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from fedsafe.common.config import PrivacyConfig, TrainingConfig
from fedsafe.common.privacy.accountants import noise_for_target

__all__ = [
    "NoiseQuestion",
    "SitePlan",
    "noise_question",
    "plan_shape",
    "plan_site",
    "plan_with",
]


@dataclass(frozen=True)
class SitePlan:
    """Noise multiplier, real Poisson sample rate and steps per round for one site."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    planned_rounds: int
    planned_epsilon: float


@dataclass(frozen=True)
class NoiseQuestion:
    """What a noise search answers (everything its answer depends on): the smallest noise
    whose epsilon over `steps` at `sample_rate` stays within `target_epsilon` at `delta`."""

    target_epsilon: float
    sample_rate: float
    steps: int
    delta: float
    accountant: str


def plan_shape(
    training: TrainingConfig, *, n_train: int, rounds: int | None = None
) -> tuple[float, int, int]:
    """(sample rate, steps per round, rounds) as the site will really run them.

    Opacus' Poisson loader keeps the batch count of the plain loader, so the sample rate
    is 1 / ceil(n / batch_size) and one epoch is ceil(n / batch_size) steps.
    """
    batches = math.ceil(n_train / training.batch_size)
    rounds = training.rounds if rounds is None else rounds
    return 1.0 / batches, training.local_epochs * batches, rounds


def noise_question(
    privacy: PrivacyConfig, training: TrainingConfig, *, n_train: int, rounds: int | None = None
) -> NoiseQuestion | None:
    """The search `plan_site` runs for these settings; None when the noise is given."""
    if privacy.noise_multiplier is not None:
        return None
    assert privacy.target_epsilon is not None  # guaranteed by PrivacyConfig
    sample_rate, steps_per_round, rounds = plan_shape(training, n_train=n_train, rounds=rounds)
    return NoiseQuestion(
        float(privacy.target_epsilon),
        sample_rate,
        steps_per_round * rounds,
        float(privacy.delta),
        privacy.accountant,
    )


@lru_cache(maxsize=256)
def plan_site(
    privacy: PrivacyConfig, training: TrainingConfig, *, n_train: int, rounds: int | None = None
) -> SitePlan:
    """Noise for the site's own size: given, or derived from the target for all planned rounds.

    Cached: the noise search is the slow part, and every round of a run asks the same question.
    """
    question = noise_question(privacy, training, n_train=n_train, rounds=rounds)
    answer = None
    if question is not None:
        answer = noise_for_target(
            target_epsilon=question.target_epsilon,
            sample_rate=question.sample_rate,
            steps=question.steps,
            delta=question.delta,
            accountant=question.accountant,
        )
    return plan_with(privacy, training, n_train=n_train, rounds=rounds, answer=answer)


def plan_with(
    privacy: PrivacyConfig,
    training: TrainingConfig,
    *,
    n_train: int,
    rounds: int | None = None,
    answer: tuple[float, float] | None,
) -> SitePlan:
    """The plan for these settings, the target's noise and epsilon taken from `answer` (what
    `noise_for_target` gave for `noise_question(...)`; None when the noise is given)."""
    sample_rate, steps_per_round, rounds = plan_shape(training, n_train=n_train, rounds=rounds)
    if privacy.noise_multiplier is not None:
        from fedsafe.common.privacy.accountants import epsilon_for

        eps = epsilon_for(
            [(privacy.noise_multiplier, sample_rate, steps_per_round * rounds)],
            delta=privacy.delta,
            accountant=privacy.accountant,
        )
        return SitePlan(privacy.noise_multiplier, sample_rate, steps_per_round, rounds, eps)
    if answer is None:
        raise ValueError("a plan for a target epsilon needs the noise search's answer")
    sigma, eps = answer
    return SitePlan(float(sigma), sample_rate, steps_per_round, rounds, float(eps))
