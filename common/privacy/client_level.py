"""Client-level DP: one site's whole contribution to a round, protected in the released model.

Sample-level DP-SGD (each site's own budget) bounds what any released model says about one
record. Client-level DP bounds what it says about one *site*: each round the contribution of a
site (its model update, clipped to L2 norm ``clipping_norm``) is hidden by Gaussian noise of
standard deviation ``noise_multiplier * clipping_norm`` on the sum of the updates, i.e. a
Gaussian mechanism with that multiplier per round (McMahan et al., "Learning Differentially
Private Recurrent Language Models", ICLR 2018, the DP-FedAvg recipe).

Accounting here is per release with no amplification by sampling: fedsafe samples a fixed
number of sites per round without replacement, which the Poisson-subsampled accountants do
not describe, so every round counts as if every site took part (sound, and exact when
``strategy.fraction_train`` is 1). The epsilon is composed by the RDP accountant over the
releases actually made (at sampling rate 1 the PRV accountant's discretisation takes log(1 - q)
and fails; RDP is exact in its orders for the plain Gaussian mechanism); the run stops before a
release would pass ``max_epsilon``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fedsafe.common.config import ExperimentConfig
from fedsafe.common.privacy.accountants import epsilon_for, noise_for_target

__all__ = [
    "CLIENT_LEVEL_ACCOUNTANT",
    "ClientLevelAccount",
    "client_level_account",
    "plan_client_level",
]

CLIENT_LEVEL_ACCOUNTANT = "rdp"


@dataclass
class ClientLevelAccount:
    """One run's client-level releases and their composed epsilon."""

    mode: str  # "central" (the coordinator adds the noise) or "distributed" (the sites do)
    noise_multiplier: float
    clipping_norm: float
    delta: float
    accountant: str
    planned_rounds: int
    max_epsilon: float | None = None
    releases: int = 0

    def epsilon(self, releases: int | None = None) -> float:
        """Epsilon at `delta` after `releases` noised aggregates (default: those made)."""
        count = self.releases if releases is None else releases
        if count == 0:
            return 0.0
        return epsilon_for(
            [(self.noise_multiplier, 1.0, count)], delta=self.delta, accountant=self.accountant
        )

    def allows_another(self) -> bool:
        """Whether one more release keeps the run within its client-level cap."""
        return self.max_epsilon is None or self.epsilon(self.releases + 1) <= self.max_epsilon

    def noise_std(self, contributors: int) -> float:
        """Noise on the *mean* of `contributors` updates: z * C over the sum, divided by k."""
        return self.noise_multiplier * self.clipping_norm / max(contributors, 1)

    def release_record(self, noise_std: float | None) -> dict[str, Any]:
        """What the ledger keeps about the latest release."""
        return {
            "mode": self.mode,
            "releases": self.releases,
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_std": noise_std,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "noise_multiplier": self.noise_multiplier,
            "clipping_norm": self.clipping_norm,
            "delta": self.delta,
            "accountant": self.accountant,
            "planned_rounds": self.planned_rounds,
            "max_epsilon": self.max_epsilon,
            "releases": self.releases,
            "epsilon": self.epsilon(),
            "epsilon_planned": self.epsilon(self.planned_rounds),
            "sampling": "no amplification (every round counts)",
        }


@lru_cache(maxsize=64)
def _noise_for(target_epsilon: float, rounds: int, delta: float, accountant: str) -> float:
    """The noise search (about 0.6 s), asked again by every site every round: cached, as the
    sample-level planner's is (the inputs are plain numbers, the account is built fresh)."""
    noise, _ = noise_for_target(
        target_epsilon=target_epsilon,
        sample_rate=1.0,
        steps=rounds,
        delta=delta,
        accountant=accountant,
    )
    return noise


def plan_client_level(
    *,
    mode: str,
    target_epsilon: float | None,
    noise_multiplier: float | None,
    clipping_norm: float,
    max_epsilon: float | None,
    delta: float,
    accountant: str,
    rounds: int,
) -> ClientLevelAccount:
    """The run's client-level noise: given, or the smallest reaching the target over `rounds`."""
    if noise_multiplier is None:
        assert target_epsilon is not None  # guaranteed by ClientLevelConfig
        noise_multiplier = _noise_for(target_epsilon, rounds, delta, accountant)
    return ClientLevelAccount(
        mode=mode,
        noise_multiplier=noise_multiplier,
        clipping_norm=clipping_norm,
        delta=delta,
        accountant=accountant,
        planned_rounds=rounds,
        max_epsilon=max_epsilon,
    )


def client_level_account(cfg: ExperimentConfig) -> ClientLevelAccount | None:
    """The run's client-level DP account (None when privacy.client_level.mode is off)."""
    c = cfg.privacy.client_level
    if c.mode == "off":
        return None
    return plan_client_level(
        mode=c.mode,
        target_epsilon=c.target_epsilon,
        noise_multiplier=c.noise_multiplier,
        clipping_norm=c.clipping_norm,
        max_epsilon=c.max_epsilon,
        delta=cfg.privacy.delta,
        accountant=CLIENT_LEVEL_ACCOUNTANT,
        rounds=cfg.training.rounds,
    )
