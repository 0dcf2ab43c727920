"""Cross-site summaries of per-site metrics: the fairness gap between best and worst site."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fairness_gap"]


def fairness_gap(per_site: dict[str, float]) -> dict[str, Any]:
    """Best site, worst site and the gap between them for a higher-is-better metric.

    A federated model can look good on average while failing one site; the gap makes that
    visible. NaN values (e.g. AUROC on a one-class held-out split) are ignored and the
    sites they came from are listed under `ignored`. With no finite value, everything is
    None/NaN rather than an error, so a report can still be written.
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
    return {
        "best_site": best_site,
        "best": finite[best_site],
        "worst_site": worst_site,
        "worst": finite[worst_site],
        "gap": finite[best_site] - finite[worst_site],
        "n_sites": len(finite),
        "ignored": ignored,
    }
