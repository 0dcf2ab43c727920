"""The site's Gaussians: exact uniforms strictly inside (0, 1), normal to within sampling error,
finite at the extreme words, and the secure-mode sum of four."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsafe.common.privacy.randomness import OsRandomness, Randomness, SeededRandomness


class _FixedWords(Randomness):
    """Replays the words it is given: the extreme inputs of the transform."""

    name = "fixed-words-test"
    private = False

    def __init__(self, word: int) -> None:
        self.word = np.uint64(word)

    def words(self, n: int) -> np.ndarray:
        return np.full(n, self.word, dtype=np.uint64)


def _ks_distance(z: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance of `z` from the standard normal."""
    z = np.sort(z)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    n = len(z)
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


def test_os_normals_are_standard_normal_within_sampling_error() -> None:
    z = OsRandomness().standard_normal(100_001)
    assert z.dtype == np.float64 and len(z) == 100_001
    # 1.63 / sqrt(n) is the KS critical value at the 1% level
    assert _ks_distance(z) < 1.63 / math.sqrt(len(z))
    half = len(z) // 2
    assert abs(np.corrcoef(z[:half], z[half : 2 * half])[0, 1]) < 0.02  # cos vs sin outputs


@pytest.mark.parametrize("word", [0, 2**64 - 1, 1 << 12, (1 << 64) - (1 << 12)])
def test_the_extreme_words_give_finite_normals(word: int) -> None:
    """Word 0 is the smallest uniform, 2^-53, not 0 (log 0 = -inf); all ones the largest,
    1 - 2^-53, not 1: the largest normal is sqrt(2 * 53 ln 2) = 8.57."""
    z = _FixedWords(word).standard_normal(8)
    assert np.isfinite(z).all()
    assert np.abs(z).max() <= math.sqrt(-2.0 * math.log(2.0**-53)) + 1e-9


def test_the_uniforms_are_exact_odd_multiples_of_two_to_minus_53() -> None:
    """u = k / 2^52 + 2^-53 with k the top 52 bits: recovered from the largest radius."""
    z0 = _FixedWords(0).standard_normal(2)
    assert z0[0] == pytest.approx(math.sqrt(-2.0 * math.log(2.0**-53)), rel=1e-15)


def test_seeded_normals_replay_and_os_normals_do_not() -> None:
    assert np.array_equal(SeededRandomness(7).standard_normal(9),
                          SeededRandomness(7).standard_normal(9))  # fmt: skip
    assert not np.array_equal(OsRandomness().standard_normal(9), OsRandomness().standard_normal(9))


def test_gaussian_noise_sums_four_samples_of_four_distinct_pairs_halved() -> None:
    """Opacus' secure mode (Holohan & Braghin, n = 2): (z1 + z2 + z3 + z4) / 2 * std, the four
    from four different Box-Muller pairs; the cosine and sine of one pair never share an
    element (their sum would be one sample, sqrt(2) r sin(theta + pi/4))."""
    like = torch.zeros(1, dtype=torch.float32)
    count = 35
    noise = SeededRandomness(3).gaussian(torch.Size([5, 7]), std=2.0, like=like)
    z = SeededRandomness(3).standard_normal(4 * count)
    cos, sin = z[: 2 * count].reshape(2, count), z[2 * count :].reshape(2, count)
    j = np.arange(count)
    expected = cos[0] + cos[1] + sin[0][(j - 1) % count] + sin[1][(j - 1) % count]
    assert noise.shape == (5, 7) and noise.dtype == torch.float32
    assert torch.allclose(noise.flatten(), torch.from_numpy(expected).float(), atol=1e-6)
    pairs = [{int(k), int(k) + count, int(k - 1) % count, (int(k - 1) % count) + count} for k in j]
    assert all(len(p) == 4 for p in pairs)
    single = SeededRandomness(4).gaussian(torch.Size([1]), std=1.0, like=like)
    four_cosines = SeededRandomness(4).standard_normal(8)[:4].sum() / 2
    assert float(single) == pytest.approx(float(four_cosines), rel=1e-6)


@pytest.mark.parametrize("word", [0, 2**64 - 1, 2**63, (1 << 64) - (1 << 11)])
def test_uniforms_never_reach_0_or_1_even_at_the_extreme_words(word: int) -> None:
    """(k + 0.5) / 2^53 rounded to exactly 1.0 at the top word; (2k + 1) / 2^53 is exact."""
    u = _FixedWords(word).uniform(3)
    assert ((u > 0.0) & (u < 1.0)).all()
