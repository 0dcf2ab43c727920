"""The distributed discrete Gaussian through Flower's own SecAgg+ arithmetic: the decoded mean is
the sites' exact integer sum mod T, its noise has the accounted size, wrap-around is post-
processing, and the noise comes from the OS (no seed predicts it)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_multiply,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize

from fedsafe.common.errors import PrivacyError
from fedsafe.common.privacy.discrete_gaussian import discrete_gaussian
from fedsafe.common.privacy.distributed_dp import (
    decode_mean,
    distributed_clipping_range,
    encode_update,
    integer_sensitivity,
    share_variance,
)
from fedsafe.common.secagg import secagg_sizing

SITES, D, Z, C = 4, 3_000, 1.2, 0.5


def _flower_mean(vectors: list[list[np.ndarray]], c: float, t_range: int, mod: int) -> list:
    """What Flower's SecAgg+ mod and workflow compute from the sites' float vectors (weights 1,
    masks cancelled): quantise, prepend the weight factor, sum mod M, dequantise, re-weight."""
    total = None
    for vector in vectors:
        q = quantize(parameters_multiply(vector, 1.0), c, t_range)
        # int64 as after Flower adds its (here cancelled) int64 masks
        combined = [a.astype(np.int64) for a in factor_combine(t_range, q)]
        total = combined if total is None else parameters_addition(total, combined)
    assert total is not None
    q_total, recon = factor_extract(parameters_mod(total, mod))
    out = dequantize(recon, c, t_range)
    for vec in out:
        vec += -(len(vectors) - 1) * c
        vec *= t_range / q_total
    return out


def _setup() -> tuple[float, int, int, int, list[list[np.ndarray]]]:
    sizing = secagg_sizing([1] * SITES, clipping_range=1.0)
    t_range, threshold = sizing.quantization_range, sizing.threshold
    c = distributed_clipping_range(
        sites=SITES,
        threshold=threshold,
        noise_multiplier=Z,
        clipping_norm=C,
        target_range=t_range,
        dim=D,
    )
    rng = np.random.default_rng(3)
    updates = [[rng.normal(size=(D // 3, 3)) * 0.05] for _ in range(SITES)]  # norm > C: clipped
    return c, t_range, threshold, sizing.modulus_range, updates


def _encode(update: list[np.ndarray], c: float, t_range: int, threshold: int) -> list[np.ndarray]:
    values, _ = encode_update(
        update,
        noise_multiplier=Z,
        clipping_norm=C,
        clipping_range=c,
        target_range=t_range,
        threshold=threshold,
    )
    return values


def test_the_decoded_mean_is_the_exact_integer_sum_mod_t_of_what_the_sites_sent() -> None:
    c, t_range, threshold, mod, updates = _setup()
    vectors = [_encode(u, c, t_range, threshold) for u in updates]
    decoded = decode_mean(
        _flower_mean(vectors, c, t_range, mod),
        clipping_range=c,
        target_range=t_range,
        contributors=SITES,
    )
    step = 2 * c / t_range
    residues = sum(np.rint((v[0] + c) / step).astype(np.int64) for v in vectors)
    centred = np.mod(residues, t_range)
    centred = np.where(centred >= t_range // 2, centred - t_range, centred)
    assert np.array_equal(decoded[0], centred * step / SITES)


def test_the_noise_on_the_mean_has_the_accounted_size() -> None:
    """Fails if a site adds no noise (or less than its share)."""
    c, t_range, threshold, mod, updates = _setup()
    vectors = [_encode(u, c, t_range, threshold) for u in updates]
    decoded = decode_mean(
        _flower_mean(vectors, c, t_range, mod),
        clipping_range=c,
        target_range=t_range,
        contributors=SITES,
    )[0]
    clipped = [u[0] * min(1.0, C / np.linalg.norm(u[0])) for u in updates]
    residual = decoded - np.mean(clipped, axis=0)
    step = 2 * c / t_range
    share = share_variance(
        noise_multiplier=Z, clipping_norm=C, step=step, dim=D, threshold=threshold
    )
    expected = math.sqrt(SITES * float(share)) * step / SITES
    assert np.std(residual) == pytest.approx(expected, rel=0.05)
    # ... and that is at least z * C on the sum of any threshold-many shares, over k sites.
    assert expected * SITES >= Z * C * math.sqrt(SITES / threshold) * 0.999


def test_the_sensitivity_covers_the_rounding_to_the_grid() -> None:
    step = 1e-3
    a = np.full(100, 0.0004)  # rounds to 0
    b = np.full(100, 0.0006)  # rounds to 1 step
    gap = np.linalg.norm(np.rint(a / step) - np.rint(b / step))
    assert gap <= integer_sensitivity(np.linalg.norm(a - b), step, 100)


def test_the_range_leaves_eight_sigmas_and_keeps_the_grid_exact() -> None:
    c, t_range, threshold, _, _ = _setup()
    step = 2 * c / t_range
    noise_sd = Z * integer_sensitivity(C, step, D) * step * math.sqrt(SITES / threshold)
    assert SITES * C + 8 * noise_sd < c
    assert math.frexp(c)[0] == 0.5 and math.frexp(step)[0] == 0.5  # powers of two


def test_a_sum_that_wraps_decodes_to_a_function_of_the_exact_integer_sum_only() -> None:
    """What the server learns is (sum of the sites' integers) mod T: post-processing."""
    c, t_range, _, mod, _ = _setup()
    step = 2 * c / t_range
    big = [np.array([t_range // 2 - 1, -(t_range // 3), 5], dtype=np.int64) for _ in range(SITES)]
    vectors = [[np.mod(m, t_range).astype(np.float64) * step - c] for m in big]
    decoded = decode_mean(
        _flower_mean(vectors, c, t_range, mod),
        clipping_range=c,
        target_range=t_range,
        contributors=SITES,
    )[0]
    exact = np.mod(sum(big), t_range)
    exact = np.where(exact >= t_range // 2, exact - t_range, exact)
    assert np.array_equal(decoded, exact * step / SITES)
    assert decoded[2] == pytest.approx(5 * step)  # a coordinate that does not wrap is exact


def test_a_noise_share_too_small_for_the_bound_is_refused() -> None:
    with pytest.raises(PrivacyError, match="too small for the distributed discrete Gaussian"):
        share_variance(noise_multiplier=1e-9, clipping_norm=1e-9, step=1.0, dim=1, threshold=3)


def test_discrete_gaussian_has_its_variance_and_no_seed_predicts_it() -> None:
    samples = discrete_gaussian(Fraction(25), 20_000)
    assert samples.dtype == np.int64
    assert np.var(samples) == pytest.approx(25, rel=0.05)
    assert abs(np.mean(samples)) < 0.2
    draws = []
    for _ in range(2):
        np.random.seed(0)
        random.seed(0)
        draws.append(discrete_gaussian(Fraction(10**6), 200))
    assert not np.array_equal(draws[0], draws[1])
