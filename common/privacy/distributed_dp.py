"""Distributed DP under secure aggregation: the distributed discrete Gaussian mechanism.

Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning
with Secure Aggregation" (ICML 2021). Each site, on its own:

1. clips its round update (trained model minus the global one, all arrays as one vector) to
   L2 norm C;
2. maps it onto SecAgg+'s integer grid of step g = 2c / T, rounding to the nearest point, so
   two neighbouring updates differ by at most Delta = C / g + sqrt(d) in L2, in grid units;
3. adds discrete Gaussian noise N_Z(0, s^2) to every coordinate, s^2 = (z Delta)^2 / t, where
   t is the protocol's reconstruction threshold: no sum is ever unmasked with fewer than t
   inputs, so the noise of any unmasked sum has variance >= (z Delta)^2;
4. reduces mod T and sends the residue as a value exactly on Flower's quantisation grid, so
   Flower's stochastic rounding is the identity on it and SecAgg+ sums the residues exactly.

The server learns the sum of residues; mod T it is (sum of the sites' integer vectors) mod T, a
post-processing of the exact integer sum, so modular wrap-around never weakens the guarantee;
it only garbles a coordinate whose true sum leaves [-T/2, T/2), which the coordinator makes
negligible by choosing the range c (``distributed_clipping_range``: at least n C plus 8
standard deviations of the summed noise). Kairouz et al. bound the Renyi DP of a sum of k >= t
such shares by alpha Delta^2 / (2 k s^2) + tau (their Theorem 1, with tau =
10 sum_{j<k} exp(-2 pi^2 s^2 j / (j + 1)), entering as d tau); ``share_variance`` refuses
settings where d tau, for up to 1,000 shares, is not below 1e-12, so each release is accounted
as a Gaussian mechanism of multiplier z. Neighbouring federations differ by adding or removing
one site's contribution (zero-out adjacency, as in DP-FedAvg).

Assumption (README threat model): at least t sites in every unmasked sum add their share
honestly and none shares its noise with the coordinator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from fedsafe.common.errors import PrivacyError
from fedsafe.common.privacy.discrete_gaussian import discrete_gaussian

__all__ = [
    "MECHANISM",
    "TAU_LIMIT",
    "decode_mean",
    "distributed_clipping_range",
    "encode_update",
    "integer_sensitivity",
    "share_variance",
    "tau",
]

MECHANISM = "distributed-discrete-gaussian (Kairouz, Liu, Steinke 2021)"
TAU_LIMIT = 1e-12
MAX_SITES = 1000  # the most shares one sum is accounted for (dataset.num_sites is <= 1000)
_SIGMAS = 8.0  # wrap-around margin of the summed noise, in standard deviations


def _power_of_two(value: int, name: str) -> None:
    if value < 2 or value & (value - 1):
        raise PrivacyError(f"distributed DP: {name} must be a power of two >= 2, got {value}")


def integer_sensitivity(clipping_norm: float, step: float, dim: int) -> float:
    """L2 distance, in grid units, between two clipped updates after rounding to the grid."""
    return clipping_norm / step + math.sqrt(dim)


def tau(share_var: float, contributors: int) -> float:
    """Kairouz et al.'s distance between a sum of k shares and one discrete Gaussian."""
    return 10 * sum(
        math.exp(-2 * math.pi**2 * share_var * j / (j + 1)) for j in range(1, contributors)
    )


def share_variance(
    *, noise_multiplier: float, clipping_norm: float, step: float, dim: int, threshold: int
) -> Fraction:
    """Each site's noise variance s^2 = (z Delta)^2 / t, rounded up, as an exact fraction."""
    if threshold < 1:
        raise PrivacyError(f"distributed DP: threshold must be >= 1, got {threshold}")
    delta = integer_sensitivity(clipping_norm, step, dim)
    variance = Fraction(math.ceil((noise_multiplier * delta) ** 2 / threshold))
    # Their bound adds d * tau to the Gaussian term (over up to MAX_SITES shares): keep it
    # negligible against any epsilon fedsafe reports.
    if dim * tau(float(variance), MAX_SITES) > TAU_LIMIT:
        raise PrivacyError(
            f"distributed DP: a noise share of variance {float(variance):.3g} grid units is "
            "too small for the distributed discrete Gaussian bound (tau >= 1e-12); raise the "
            "noise multiplier or the clipping norm"
        )
    return variance


def distributed_clipping_range(
    *,
    sites: int,
    threshold: int,
    noise_multiplier: float,
    clipping_norm: float,
    target_range: int,
    dim: int,
) -> float:
    """The smallest power of two c whose range [-c, c) holds the sum of `sites` clipped updates
    plus 8 standard deviations of the summed noise, for the grid it implies."""
    _power_of_two(target_range, "the quantisation range")
    c = 1.0
    while True:
        step = 2 * c / target_range
        noise_sd = noise_multiplier * integer_sensitivity(clipping_norm, step, dim) * step
        needed = sites * clipping_norm + _SIGMAS * noise_sd * math.sqrt(sites / threshold)
        if needed < c:
            return c
        c *= 2


def encode_update(
    update: Sequence[np.ndarray],
    *,
    noise_multiplier: float,
    clipping_norm: float,
    clipping_range: float,
    target_range: int,
    threshold: int,
) -> tuple[list[np.ndarray], dict[str, float]]:
    """The site's noised residues as values on Flower's grid, and what it added (to attest)."""
    _power_of_two(target_range, "the quantisation range")
    if not (clipping_range > 0 and math.isfinite(clipping_range)):
        raise PrivacyError(f"distributed DP: clipping range must be > 0, got {clipping_range}")
    flat = np.concatenate([np.asarray(u, dtype=np.float64).ravel() for u in update])
    norm = float(np.linalg.norm(flat))
    if not math.isfinite(norm):
        raise PrivacyError("distributed DP: the update is not finite")
    if norm > clipping_norm:
        flat *= clipping_norm / norm
    step = 2 * clipping_range / target_range
    variance = share_variance(
        noise_multiplier=noise_multiplier,
        clipping_norm=clipping_norm,
        step=step,
        dim=flat.size,
        threshold=threshold,
    )
    noisy = np.rint(flat / step).astype(np.int64) + discrete_gaussian(variance, flat.size)
    residues = np.mod(noisy, target_range)
    values = residues.astype(np.float64) * step - clipping_range  # exact: step is 2^k
    out, start = [], 0
    for u in update:
        size = int(np.asarray(u).size)
        out.append(values[start : start + size].reshape(np.shape(u)))
        start += size
    return out, {
        "share_variance": float(variance),
        "step": step,
        "clipped_norm": min(norm, clipping_norm),
    }


def decode_mean(
    mean: Sequence[np.ndarray], *, clipping_range: float, target_range: int, contributors: int
) -> list[np.ndarray]:
    """The noised mean update from Flower's unmasked, dequantised weighted mean.

    Flower returns (U 2c/T - k c) / k for the integer sum U of k residues (weights all 1);
    this recovers U exactly, takes it mod T into [-T/2, T/2) and scales it back by g / k.
    """
    _power_of_two(target_range, "the quantisation range")
    k = contributors
    step = 2 * clipping_range / target_range
    out = []
    for value in mean:
        total = np.rint((np.asarray(value, dtype=np.float64) * k + k * clipping_range) / step)
        residue = np.mod(total.astype(np.int64), target_range)
        centred = np.where(residue >= target_range // 2, residue - target_range, residue)
        out.append(centred.astype(np.float64) * step / k)
    return out
