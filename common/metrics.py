"""Cross-site summaries of per-site metrics: the fairness gap between best and worst site, its
uncertainty, and the mean over sites (FLamby's metric for Fed-Heart-Disease)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fairness_gap"]


def fairness_gap(
    per_site: dict[str, float], counts: dict[str, int] | None = None
) -> dict[str, Any]:
    """Best site, worst site and the gap between them for a higher-is-better metric.

    A federated model can look good on average while failing one site; the gap makes that
    visible. NaN values (e.g. AUROC on a one-class held-out split) are ignored and the
    sites they came from are listed under `ignored`. With no finite value, everything is
    None/NaN rather than an error, so a report can still be written.

    With each site's held-out count (`counts`) and a proportion metric (accuracy), the gap gets
    a 95% interval from each site's binomial sampling error (normal approximation, the two
    sites' errors independent): a gap of 0.15 over 16 and 104 patients is mostly noise, and
    the interval says so. It covers sampling only, not the choice of best and worst.
    """
    finite = {
        site: float(v) for site, v in per_site.items() if v is not None and math.isfinite(float(v))
    }
    ignored = sorted(set(per_site) - set(finite))
    if not finite:
        return {
            "best_site": None,
            "best": math.nan,
            "worst_site": None,
            "worst": math.nan,
            "gap": math.nan,
            "n_sites": 0,
            "ignored": ignored,
        }
    best_site = max(finite, key=lambda s: (finite[s], s))
    worst_site = min(finite, key=lambda s: (finite[s], s))
    gap = finite[best_site] - finite[worst_site]
    return {
        "best_site": best_site,
        "best": finite[best_site],
        "worst_site": worst_site,
        "worst": finite[worst_site],
        "gap": gap,
        "gap_ci95": _gap_interval(finite, counts or {}, best_site, worst_site),
        "mean": sum(finite.values()) / len(finite),
        "n_sites": len(finite),
        "ignored": ignored,
    }


def _gap_interval(
    values: dict[str, float], counts: dict[str, int], best: str, worst: str
) -> list[float] | None:
    n_best, n_worst = counts.get(best), counts.get(worst)
    if not n_best or not n_worst or not all(0 <= values[s] <= 1 for s in (best, worst)):
        return None
    variance = sum(values[s] * (1 - values[s]) / n for s, n in ((best, n_best), (worst, n_worst)))
    half = 1.96 * math.sqrt(variance)
    gap = values[best] - values[worst]
    return [gap - half, gap + half]
