"""Split one pooled data set into simulated sites: IID or Dirichlet label skew, seeded."""

from __future__ import annotations

import numpy as np

from fedsafe.common.errors import DataError

__all__ = ["partition_iid", "partition_dirichlet"]


def partition_iid(n: int, num_sites: int, *, seed: int) -> list[np.ndarray]:
    """Shuffle and deal rows into equal shares; every row lands in exactly one site."""
    if num_sites > n:
        raise DataError(f"cannot split {n} rows into {num_sites} sites")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_sites)]


def partition_dirichlet(
    labels: np.ndarray, num_sites: int, *, alpha: float, seed: int, min_rows: int = 10
) -> list[np.ndarray]:
    """Label skew: each class's rows are split by proportions drawn from Dirichlet(alpha).

    Redraws (up to 100 times, same seed stream) until every site has `min_rows` rows,
    so small alphas still give trainable sites.
    """
    n = len(labels)
    if num_sites * min_rows > n:
        raise DataError(f"cannot give {num_sites} sites {min_rows} rows each from {n} rows")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_sites)]
        for cls in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for site, chunk in enumerate(np.split(rows, cuts)):
                parts[site].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_rows:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise DataError(
        f"Dirichlet(alpha={alpha}) split of {n} rows into {num_sites} sites left a site "
        f"with fewer than {min_rows} rows in 100 draws; raise dataset.alpha or lower num_sites"
    )
