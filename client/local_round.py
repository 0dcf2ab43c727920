"""One private round at a site: budget check, DP-SGD training, charge, signed attestation."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from client.budget import BudgetStore, RoundRefusedError
from client.site import SiteRuntime
from client.update_cache import load_update, save_update
from common import keys
from common.attestation import arrays_digest, attestation_payload, sign_statement
from common.config import ExperimentConfig
from common.data import SiteData, dataset_info
from common.errors import PrivacyError
from common.models import model_for
from common.privacy import Charge
from common.privacy.plan_table import expected_rounds
from common.privacy.planner import plan_site
from common.training import (
    DpSettings,
    LocalResult,
    balanced_class_weights,
    evaluate,
    resolve_device,
    train_local,
)

__all__ = ["RoundOutcome", "RoundContext", "train_round", "evaluate_round", "round_seed"]

StateDict = dict[str, torch.Tensor]

log = logging.getLogger("fedsafe.client")


@dataclass(frozen=True)
class RoundContext:
    """What the server asked for: which run, which round, to what end."""

    run_id: str
    server_round: int
    purpose: str
    proximal_mu: float = 0.0


@dataclass(frozen=True)
class RoundOutcome:
    """The updated weights, the scalar metrics to report and the site's signed attestation."""

    state: StateDict
    metrics: dict[str, float]
    attestation: dict[str, Any]


def round_seed(cfg: ExperimentConfig, site: str, server_round: int) -> int:
    """A per-site, per-round seed derived from the run seed: reproducible, never shared."""
    digest = hashlib.sha256(f"{cfg.seed}/{site}/{server_round}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _model(cfg: ExperimentConfig, state: StateDict) -> torch.nn.Module:
    model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset))
    model.load_state_dict(state)
    return model


def _class_weights(cfg: ExperimentConfig, data: SiteData) -> np.ndarray | None:
    if cfg.training.class_weighting == "none":
        return None
    n_classes = dataset_info(cfg.dataset.name, cfg.dataset).n_classes
    return balanced_class_weights(data.y_train, n_classes)


def _train(
    cfg: ExperimentConfig,
    data: SiteData,
    state: StateDict,
    dp: DpSettings | None,
    ctx: RoundContext,
):  # type: ignore[no-untyped-def]
    model = _model(cfg, state)
    result = train_local(
        model,
        data.x_train,
        data.y_train,
        epochs=cfg.training.local_epochs,
        batch_size=cfg.training.batch_size,
        learning_rate=cfg.training.learning_rate,
        device=resolve_device(cfg.training.device),
        dp=dp,
        proximal_mu=ctx.proximal_mu,
        seed=round_seed(cfg, data.site, ctx.server_round),
        class_weights=_class_weights(cfg, data),
        momentum=cfg.training.momentum,
    )
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, result


def _outcome(
    site: SiteRuntime,
    ctx: RoundContext,
    trained: StateDict,
    result: LocalResult,
    *,
    epsilon: float | None,
    noise: float,
    delta: float,
) -> RoundOutcome:
    """Metrics to report and the signed attestation of exactly these arrays."""
    payload = attestation_payload(
        site=site.name,
        run_id=ctx.run_id,
        server_round=ctx.server_round,
        epsilon=epsilon,
        delta=delta if epsilon is not None else None,
        steps=result.steps,
        update_digest=arrays_digest({k: v.numpy() for k, v in trained.items()}),
        noise_multiplier=noise if epsilon is not None else None,
        sample_rate=result.sample_rate if epsilon is not None else None,
        num_examples=result.num_examples,
    )
    metrics = {
        keys.NUM_EXAMPLES: float(result.num_examples),
        keys.LOSS: result.loss,
        keys.EPSILON: math.inf if epsilon is None else epsilon,
        keys.DELTA: delta if epsilon is not None else 0.0,
        keys.STEPS: float(result.steps),
        keys.NOISE_MULTIPLIER: noise,
        keys.SAMPLE_RATE: result.sample_rate,
    }
    return RoundOutcome(trained, metrics, sign_statement(payload, site.signing_key))


def train_round(
    cfg: ExperimentConfig, site: SiteRuntime, state: StateDict, ctx: RoundContext
) -> RoundOutcome:
    """Reserve the round's budget, train, keep the update, charge the steps, sign what was done.

    The reservation (cap, noise floor and purpose checks) and its charge are one
    transaction in the site's own store, written before training: a crash mid-round
    over-counts, never under-counts. A round the site already completed (the server was
    resumed) gets the same update again, never a second training. The epsilon reported is
    composed over the site's whole history on this data set, across runs.
    """
    if not cfg.privacy.enabled:
        if site.require_dp:
            raise RoundRefusedError(
                f"site {site.name} trains only with DP-SGD; the run has privacy disabled "
                "(set privacy.enabled=true)"
            )
        trained, result = _train(cfg, site.data, state, None, ctx)
        return _outcome(site, ctx, trained, result, epsilon=None, noise=0.0, delta=0.0)
    rounds = expected_rounds(cfg.strategy.fraction_train, cfg.training.rounds)
    plan = plan_site(cfg.privacy, cfg.training, n_train=site.data.n_train, rounds=rounds)
    charge = Charge(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
    policy = site.policy
    if (policy.delta, policy.accountant) != (cfg.privacy.delta, cfg.privacy.accountant):
        raise PrivacyError(
            f"site {site.name} accounts at delta={policy.delta:g} with {policy.accountant}; "
            f"the run asks for delta={cfg.privacy.delta:g} with {cfg.privacy.accountant}"
        )
    folder = site.budget_store.parent
    input_digest = arrays_digest({k: v.numpy() for k, v in state.items()})
    with BudgetStore.open(site.budget_store) as store:
        reservation = store.reserve(
            dataset_id=site.dataset_id,
            run_id=ctx.run_id,
            round=ctx.server_round,
            charge=charge,
            policy=policy,
            purpose=ctx.purpose,
        )
        if reservation.replayed and reservation.status == "completed":
            cached = load_update(folder, ctx.run_id, ctx.server_round)
            if cached is None or cached.input_digest != input_digest:
                raise RoundRefusedError(
                    f"site {site.name} already trained round {ctx.server_round} of run {ctx.run_id} "
                    "on another model; it will not train (or be charged for) it twice"
                )
            log.warning(
                "site %s re-sends its round %d update: no new training, no new charge",
                site.name,
                ctx.server_round,
            )
            return RoundOutcome(cached.state, cached.metrics, cached.attestation)
        dp = DpSettings(charge.noise_multiplier, cfg.privacy.max_grad_norm)
        trained, result = _train(cfg, site.data, state, dp, ctx)
        # The reservation already counts the planned steps, so this is the spend after the round.
        epsilon = store.spent(site.dataset_id, delta=policy.delta, accountant=policy.accountant)
        outcome = _outcome(
            site,
            ctx,
            trained,
            result,
            epsilon=epsilon,
            noise=charge.noise_multiplier,
            delta=policy.delta,
        )
        save_update(
            folder,
            ctx.run_id,
            ctx.server_round,
            input_digest=input_digest,
            state=outcome.state,
            metrics=outcome.metrics,
            attestation=outcome.attestation,
        )
        store.complete(reservation, steps_taken=result.steps)
    return outcome


def evaluate_round(cfg: ExperimentConfig, data: SiteData, state: StateDict) -> dict[str, float]:
    """Held-out metrics of the global model on this site's own split."""
    result = evaluate(
        _model(cfg, state), data.x_test, data.y_test, device=resolve_device(cfg.training.device)
    )
    return {
        keys.NUM_EXAMPLES: float(result.num_examples),
        keys.LOSS: result.loss,
        keys.ACCURACY: result.accuracy,
        keys.BALANCED_ACCURACY: result.balanced_accuracy,
        keys.AUROC: result.auroc,
    }
