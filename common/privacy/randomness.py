"""Where DP-SGD's noise and Poisson sampling draw from: the site's OS CSPRNG, or a test-only seed.

The coordinator sets the run config, so nothing in it may make the noise predictable: a site's
noise and sampling come from `OsRandomness` (fresh OS entropy for every draw). `SeededRandomness`
exists only for known-answer tests; it is chosen by the site's own environment variable
`FEDSAFE_TEST_SEEDED_NOISE`, which a deployed site refuses, and it marks every attestation
"not private".
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod

import numpy as np
import torch

from fedsafe.common.crypto import os_random_words
from fedsafe.common.errors import PrivacyError

__all__ = [
    "Randomness",
    "OsRandomness",
    "SeededRandomness",
    "site_randomness",
    "TEST_SEED_ENV",
    "OS_CSPRNG",
    "SEEDED_TEST_ONLY",
]

TEST_SEED_ENV = "FEDSAFE_TEST_SEEDED_NOISE"
OS_CSPRNG = "os-csprng"
SEEDED_TEST_ONLY = "seeded-test-only"
_ONE_BITS = 0x3FF0000000000000  # the bits of 1.0: exponent 0, mantissa 0


class Randomness(ABC):
    """Uniforms and Gaussians in float64 from 64-bit words; subclasses say where words come from."""

    name: str
    private: bool

    @abstractmethod
    def words(self, n: int) -> np.ndarray:
        """`n` independent uniformly random uint64 words."""

    def uniform(self, n: int) -> np.ndarray:
        """`n` floats uniform on (0, 1), never 0 or 1 (`_open_unit`)."""
        return _open_unit(self.words(n))

    def _normals(self, n: int) -> torch.Tensor:
        """`n` standard normals (float64) by Box-Muller, both outputs of each pair used.

        The uniforms come from `_open_unit`. Every step runs in place, each in the faster
        library on one thread (numpy's log and sqrt, torch's cos and sin): the noise is a large
        part of a small model's DP step.
        """
        pairs = (n + 1) // 2
        u = _open_unit(self.words(2 * pairs))
        radius, angle = u[:pairs], u[pairs:]
        np.log(radius, out=radius)
        radius *= -2.0
        np.sqrt(radius, out=radius)
        angle *= 2.0 * math.pi
        r, theta = torch.from_numpy(radius), torch.from_numpy(angle)
        out = torch.empty(2 * pairs, dtype=torch.float64)
        torch.cos(theta, out=out[:pairs])
        torch.sin(theta, out=out[pairs:])
        out[:pairs].mul_(r)
        out[pairs:].mul_(r)
        return out[:n]

    def standard_normal(self, n: int) -> np.ndarray:
        """`n` standard normals by Box-Muller, both outputs of each pair used."""
        return self._normals(n).numpy()

    def gaussian(self, shape: torch.Size, *, std: float, like: torch.Tensor) -> torch.Tensor:
        """N(0, std^2) noise shaped and typed like `like`, hardened against float attacks.

        As Opacus' secure mode does (Holohan & Braghin 2021, section 5.1, n = 2), the sample is
        the sum of four Gaussians of the target std divided by 2: the low-order bits of one
        floating-point Gaussian no longer reveal which value it was added to.
        """
        count = math.prod(shape)
        if std == 0 or count == 0:
            return torch.zeros(shape, dtype=like.dtype, device=like.device)
        if count == 1:  # four cosines of four pairs: two pairs cannot give four samples
            draws = self._normals(8).view(2, 4)[0].sum().reshape(1).mul_(std / 2.0)
            return draws.view(tuple(shape)).to(like.device, like.dtype)
        # `_normals` puts pair j's cosine at j and its sine at 2 count + j: each element takes
        # the cosines of pairs j and count + j and the sines of pairs j - 1 and count + j - 1
        # (rolled by one), four independent samples, never the two outputs of one pair
        normals = self._normals(4 * count).view(2, 2, count)
        draws = normals[0].sum(dim=0).add_(normals[1].sum(dim=0).roll(1)).mul_(std / 2.0)
        return draws.view(tuple(shape)).to(like.device, like.dtype)

    def poisson_mask(self, n: int, rate: float) -> np.ndarray:
        """Each of `n` records independently included with probability `rate`."""
        return self.uniform(n) < rate


def _open_unit(words: np.ndarray) -> np.ndarray:
    """Uniforms on (0, 1) made in place from the words: the top 52 bits k set as the mantissa
    of a double in [1, 2), shifted exactly (Sterbenz) to k / 2^52 + 2^-53 = (2k + 1) / 2^53.
    No integer-to-float conversion, and 0 and 1 never occur (k + 0.5 rounded to 1 at the top)."""
    words >>= np.uint64(12)
    words |= np.uint64(_ONE_BITS)
    u = words.view(np.float64)
    u -= 1.0 - 2.0**-53
    return u


class OsRandomness(Randomness):
    """Every word from the operating system's CSPRNG: nothing a coordinator knows predicts it."""

    name = OS_CSPRNG
    private = True

    def words(self, n: int) -> np.ndarray:
        return os_random_words(n)


class SeededRandomness(Randomness):
    """Reproducible words from a seed: for tests only; a release made with it is not private."""

    name = SEEDED_TEST_ONLY
    private = False

    def __init__(self, seed: int) -> None:
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def words(self, n: int) -> np.ndarray:
        return self._rng.integers(0, 2**64, size=n, dtype=np.uint64)


def site_randomness(*, deployed: bool, salt: int = 0) -> Randomness:
    """The site's randomness: OS CSPRNG, unless its own environment asks for the test seed.

    A deployed site refuses the test seed outright; a simulated one uses it and says so in
    every attestation. `salt` keeps sites and rounds of one seeded test apart.
    """
    value = os.environ.get(TEST_SEED_ENV)
    if value is None or value == "":
        return OsRandomness()
    if deployed:
        raise PrivacyError(
            f"{TEST_SEED_ENV} is set in this site's environment: reproducible noise is a "
            "test-only switch and a deployed site never trains with it. Unset it and restart"
        )
    try:
        seed = int(value)
    except ValueError:
        raise PrivacyError(f"{TEST_SEED_ENV} must be an integer seed, got {value!r}") from None
    return SeededRandomness(seed * 1_000_003 + salt)
