"""Central (client-level) DP at the coordinator: Flower's server-side fixed-clipping wrapper,
with its noise drawn from the OS CSPRNG and calibrated to the sites actually averaged.

Flower's ``DifferentialPrivacyServerSideFixedClipping`` clips each site's update (its model
minus the round's global model) to L2 norm C, lets the inner FedAvg average them, and adds
Gaussian noise to the mean. Two things are changed, both in the one method Flower provides
for the noise step (``_add_noise_to_aggregated_arrays``, pinned to the flwr series below):

- the noise comes from ``OsRandomness`` (fresh OS entropy, hardened like Opacus' secure mode),
  not numpy's global generator, which any code in the process can seed or read;
- its standard deviation is z * C / k for the k updates actually averaged this round, where
  Flower uses the number *planned*: with a dropout the mean's sensitivity is C / k, and noise
  sized for more sites would under-protect the rest.

Weights are uniform (each reply's weight is set to 1 before aggregation), so one site moves
the mean by at most C / k. Every noised aggregate counts as a release in the run's
``ClientLevelAccount``, adopted or not.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy

from fedsafe.common.errors import FedsafeError
from fedsafe.common.privacy.client_level import ClientLevelAccount
from fedsafe.common.privacy.randomness import OsRandomness, Randomness

__all__ = ["CentralDP", "NOISE_HOOK", "base_strategy"]

# The Flower method the noise step is taken over by; checked to exist at construction.
NOISE_HOOK = "_add_noise_to_aggregated_arrays"


class CentralDP(DifferentialPrivacyServerSideFixedClipping):
    """Server-side fixed clipping with OS noise of std z * C / k on the mean of k updates."""

    def __init__(
        self,
        strategy: Strategy,
        account: ClientLevelAccount,
        *,
        num_sampled_clients: int,
        randomness: Randomness | None = None,
    ) -> None:
        if not callable(getattr(DifferentialPrivacyServerSideFixedClipping, NOISE_HOOK, None)):
            raise FedsafeError(
                f"central DP: Flower's server-side clipping wrapper has no {NOISE_HOOK}; the "
                "noise step cannot be taken over (written against flwr 1.39.x). Re-read "
                "flwr/serverapp/strategy/dp_fixed_clipping.py before running"
            )
        super().__init__(
            strategy,
            noise_multiplier=account.noise_multiplier,
            clipping_norm=account.clipping_norm,
            num_sampled_clients=max(num_sampled_clients, 1),
        )
        self.account = account
        self.randomness = randomness if randomness is not None else OsRandomness()
        self.averaged = 0
        self.last_noise_std: float | None = None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.averaged = sum(1 for r in replies if not r.has_error())
        self.num_sampled_clients = max(self.averaged, 1)  # what the noise is sized for
        self.last_noise_std = None
        return super().aggregate_train(server_round, replies)

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        std = self.account.noise_std(self.averaged)
        noised: dict[str, Array] = {}
        for name, array in aggregated_arrays.items():
            value = np.asarray(array.numpy(), dtype=np.float64)
            like = torch.zeros((), dtype=torch.float64)
            noise = self.randomness.gaussian(torch.Size(value.shape), std=std, like=like).numpy()
            noised[name] = Array(value + noise)
        self.account.releases += 1
        self.last_noise_std = std
        return ArrayRecord(noised)


def base_strategy(strategy: Strategy) -> Strategy:
    """The strategy a DP wrapper wraps (whose optimiser state a checkpoint keeps)."""
    return strategy.strategy if isinstance(strategy, CentralDP) else strategy
