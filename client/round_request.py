"""What the server asked a site for, and what the site checks before it charges anything: the
unit it accounts in, delta < 1/n, a batch size that keeps its row count as private as its
release policy says, and class weights only from a declared prevalence under DP."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsafe.client.budget import PolicyRefusedError
from fedsafe.client.site import SiteRuntime
from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.data import dataset_info
from fedsafe.common.names import check_name
from fedsafe.common.training import balanced_class_weights

__all__ = [
    "RoundContext",
    "parse_round_context",
    "refusal",
    "check_request",
    "class_weights",
    "decision_prior",
]


@dataclass(frozen=True)
class RoundContext:
    """What the server asked for: which run, which round, to what end."""

    run_id: str
    server_round: int
    purpose: str
    proximal_mu: float = 0.0


def parse_round_context(instructions: Mapping[str, Any], *, train: bool) -> RoundContext:
    """The round the coordinator asks for, checked: a valid run id and a round >= 1.

    Raises KeyError, TypeError or ValueError on a malformed request (the site refuses it).
    """
    run_id = check_name("run-id", instructions[keys.RUN_ID], source="the coordinator's message")
    server_round = instructions[keys.SERVER_ROUND]
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
        raise ValueError(f"server-round must be an integer >= 1, got {server_round!r}")
    purpose = instructions[keys.PURPOSE] if train or keys.PURPOSE in instructions else ""
    if not isinstance(purpose, str):
        raise TypeError(f"purpose must be a string, got {type(purpose).__name__}")
    mu = instructions.get(keys.PROXIMAL_MU, 0.0) if train else 0.0
    if isinstance(mu, bool) or not isinstance(mu, (int, float)):
        raise TypeError(f"proximal-mu must be a number, got {type(mu).__name__}")
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"proximal-mu must be a finite float >= 0, got {mu!r}")
    return RoundContext(
        run_id=run_id, server_round=server_round, purpose=purpose, proximal_mu=float(mu)
    )


def refusal(site: SiteRuntime, ctx: RoundContext, message: str) -> PolicyRefusedError:
    return PolicyRefusedError(
        f"site {site.name} refused run '{ctx.run_id}', round {ctx.server_round}: {message}",
        reason="policy",
        dataset_id=site.dataset_id,
        run_id=ctx.run_id,
        round=ctx.server_round,
        cap=site.policy.max_epsilon,
    )


def _declared_prevalence(
    site: SiteRuntime, ctx: RoundContext, n_classes: int, asked: str
) -> np.ndarray:
    """The class prevalence the site declared (its policy, or federation.class_prevalence in a
    simulation), never one read from its labels; a site that declared none refuses."""
    prevalence = np.asarray(site.policy.class_prevalence, dtype=np.float64)
    if len(prevalence) != n_classes:
        raise refusal(
            site,
            ctx,
            f"{asked} needs the class prevalence the site declared ({n_classes} probabilities "
            "in its policy's class_prevalence, or federation.class_prevalence in a "
            "simulation); one read from the site's exact label counts would depend on every "
            "record",
        )
    return prevalence


def class_weights(
    cfg: ExperimentConfig, site: SiteRuntime, ctx: RoundContext, *, private: bool
) -> np.ndarray | None:
    """Class weights: under DP from the declared prevalence only, never from exact counts."""
    if cfg.training.class_weighting == "none":
        return None
    n_classes = dataset_info(cfg.dataset.name, cfg.dataset).n_classes
    if not private:
        return balanced_class_weights(site.data.y_train, n_classes)
    prevalence = _declared_prevalence(site, ctx, n_classes, "training.class_weighting=balanced")
    return 1.0 / (n_classes * prevalence)


def decision_prior(
    cfg: ExperimentConfig, site: SiteRuntime, ctx: RoundContext
) -> np.ndarray | None:
    """The class prevalence a `prevalence` decision divides by: the site's declared one only
    (its policy, or federation.class_prevalence in a simulation), so the decision depends on no
    record; a site that declared none refuses rather than guess."""
    if cfg.training.decision_rule != "prevalence":
        return None
    n_classes = dataset_info(cfg.dataset.name, cfg.dataset).n_classes
    return _declared_prevalence(site, ctx, n_classes, "training.decision_rule=prevalence")


def check_request(cfg: ExperimentConfig, site: SiteRuntime, ctx: RoundContext) -> None:
    """What the site checks before any charge: the unit it accounts in and delta < 1/n."""
    policy = site.policy
    if (policy.delta, policy.accountant) != (cfg.privacy.delta, cfg.privacy.accountant):
        raise refusal(
            site,
            ctx,
            f"the site accounts at delta={policy.delta:g} with {policy.accountant}; the run "
            f"asks for delta={cfg.privacy.delta:g} with {cfg.privacy.accountant}",
        )
    release = site.release
    if release.evaluation != "exact" and cfg.training.batch_size < release.count_rounding:
        raise refusal(
            site,
            ctx,
            f"training.batch_size={cfg.training.batch_size} is below release.count_rounding="
            f"{release.count_rounding}: the sample rate 1/ceil(n/B) would reveal this site's "
            "row count more precisely than its release policy allows",
        )
    n = site.data.n_rows
    if policy.delta >= 1.0 / n:
        raise refusal(
            site,
            ctx,
            f"delta={policy.delta:g} is not below 1/n = {1.0 / n:.3g} for this site's {n} "
            "records: a mechanism that may release a whole record with probability delta "
            "gives no meaningful guarantee. Fix: a smaller privacy.delta",
        )
