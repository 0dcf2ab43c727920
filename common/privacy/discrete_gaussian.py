"""Exact discrete Gaussian samples from the operating system's CSPRNG.

The sampler of Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy"
(NeurIPS 2020), Algorithms 1-3: Bernoulli(exp(-gamma)) by exact rational arithmetic, a discrete
Laplace proposal, rejection to N_Z(0, sigma^2). No floating point decides an outcome, so the
output distribution is exactly the discrete Gaussian (no float-precision attacks); every
random integer comes from ``secrets`` (the OS CSPRNG), never a seedable generator.
"""

from __future__ import annotations

import secrets
from fractions import Fraction

import numpy as np

__all__ = ["discrete_gaussian", "bernoulli_exp"]


def _bernoulli(p: Fraction) -> bool:
    return secrets.randbelow(p.denominator) < p.numerator


def bernoulli_exp(gamma: Fraction) -> bool:
    """True with probability exp(-gamma), gamma >= 0 rational (CKS Algorithm 1)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    while gamma > 1:
        if not bernoulli_exp(Fraction(1)):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k):
        k += 1
    return k % 2 == 1


def _discrete_laplace(t: int) -> int:
    """P(x) proportional to exp(-|x| / t), t >= 1 an integer (CKS Algorithm 2)."""
    while True:
        u = secrets.randbelow(t)
        if not bernoulli_exp(Fraction(u, t)):
            continue
        v = 0
        while bernoulli_exp(Fraction(1)):
            v += 1
        x = u + t * v
        negative = secrets.randbelow(2) == 1
        if negative and x == 0:
            continue
        return -x if negative else x


def _one(sigma2: Fraction, t: int) -> int:
    while True:
        y = _discrete_laplace(t)
        gamma = (abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        if bernoulli_exp(gamma):
            return y


def discrete_gaussian(sigma2: Fraction | int, n: int) -> np.ndarray:
    """`n` independent samples of N_Z(0, sigma2) as int64 (CKS Algorithm 3)."""
    sigma2 = Fraction(sigma2)
    if sigma2 <= 0:
        raise ValueError(f"sigma2 must be > 0, got {sigma2}")
    t = int(np.floor(np.sqrt(float(sigma2)))) + 1
    return np.array([_one(sigma2, t) for _ in range(n)], dtype=np.int64)
