"""One private round at a site: budget check, DP-SGD training, charge, signed attestation."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsafe.client.budget import (
    BudgetStore,
    record_evaluation,
    record_nonprivate,
    round_lock,
)
from fedsafe.client.plan_cache import PlanCache, site_plan
from fedsafe.client.round_request import (
    RoundContext,
    check_request,
    class_weights,
    decision_prior,
    refusal,
)
from fedsafe.client.site import SiteRuntime
from fedsafe.client.update_cache import load_update, save_update
from fedsafe.common import keys
from fedsafe.common.attestation import arrays_digest, attestation_payload, sign_statement
from fedsafe.common.config import ExperimentConfig, to_dict
from fedsafe.common.data import SiteData, dataset_info
from fedsafe.common.models import model_for
from fedsafe.common.privacy import Charge
from fedsafe.common.privacy.plan_table import expected_rounds
from fedsafe.common.privacy.randomness import Randomness, site_randomness
from fedsafe.common.quantise import compact_update
from fedsafe.common.release_policy import release_count, release_evaluation
from fedsafe.common.training import (
    DpSettings,
    LocalResult,
    eval_counts,
    resolve_device,
    train_local,
)

__all__ = [
    "RoundOutcome",
    "RoundContext",
    "train_round",
    "evaluate_round",
    "round_seed",
    "config_digest",
    "released_weight",
]

StateDict = dict[str, torch.Tensor]

log = logging.getLogger("fedsafe.client")

# Keys that name where a run lives, not what it does: a resume may set them.
_NOT_BOUND = ("resume", "run_id", "runs_dir")


@dataclass(frozen=True)
class RoundOutcome:
    """The updated weights, the scalar metrics to report and the site's signed attestation;
    `encoded`: the packed 8-bit codes that travel instead of `state` (their dequantisation)."""

    state: StateDict
    metrics: dict[str, float]
    attestation: dict[str, Any]
    encoded: bytes | None = None


def round_seed(cfg: ExperimentConfig, site: str, server_round: int) -> int:
    """Orders a non-private baseline's batches reproducibly; never used under DP."""
    digest = hashlib.sha256(f"{cfg.seed}/{site}/{server_round}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def config_digest(cfg: ExperimentConfig) -> str:
    """SHA-256 of everything the run does (not where it lives): a replay must match it."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_BOUND}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _model(cfg: ExperimentConfig, state: StateDict) -> torch.nn.Module:
    model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset))
    model.load_state_dict(state)
    return model


def _train(
    cfg: ExperimentConfig,
    site: SiteRuntime,
    state: StateDict,
    ctx: RoundContext,
    *,
    dp: DpSettings | None,
    randomness: Randomness | None,
    class_weights: np.ndarray | None,
) -> tuple[StateDict, LocalResult]:
    model = _model(cfg, state)
    result = train_local(
        model,
        site.data.x_train,
        site.data.y_train,
        epochs=cfg.training.local_epochs,
        batch_size=cfg.training.batch_size,
        learning_rate=cfg.training.learning_rate,
        device=resolve_device(cfg.training.device),
        dp=dp,
        randomness=randomness,
        proximal_mu=ctx.proximal_mu,
        seed=round_seed(cfg, site.name, ctx.server_round),
        class_weights=class_weights,
        momentum=cfg.training.momentum,
    )
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, result


def _compact(
    cfg: ExperimentConfig, site: SiteRuntime, ctx: RoundContext, trained: StateDict, sent: StateDict
) -> tuple[StateDict, bytes | None]:
    """An 8-bit update, after DP-SGD (post-processing): what the coordinator will read from
    the codes is what the site attests. Rounding draws from the OS, never from the config."""
    bits = cfg.training.update_bits
    if bits == 32:
        return trained, None
    plain = {k: v.numpy() for k, v in trained.items()}
    try:
        arrays, encoded = compact_update(plain, {k: v.numpy() for k, v in sent.items()}, bits=bits)
    except ValueError as err:
        raise refusal(site, ctx, f"its update does not fit {bits} bits ({err}); withheld") from None
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, encoded


def _outcome(
    site: SiteRuntime,
    ctx: RoundContext,
    trained: StateDict,
    result: LocalResult,
    *,
    epsilon: float | None,
    noise: float,
    delta: float,
    randomness: str | None,
    encoded: bytes | None = None,
) -> RoundOutcome:
    """What the release policy lets leave, and the signed attestation of exactly these arrays."""
    weight = released_weight(site, result.num_examples)
    private = epsilon is not None
    payload = attestation_payload(
        site=site.name,
        run_id=ctx.run_id,
        server_round=ctx.server_round,
        epsilon=epsilon,
        delta=delta if private else None,
        steps=result.steps,
        update_digest=arrays_digest({k: v.numpy() for k, v in trained.items()}),
        noise_multiplier=noise if private else None,
        sample_rate=result.sample_rate if private else None,
        num_examples=weight,
        randomness=randomness,
        release=site.release.evaluation,
    )
    metrics = {
        keys.NUM_EXAMPLES: float(weight),
        keys.EPSILON: math.inf if epsilon is None else epsilon,
        keys.DELTA: delta if private else 0.0,
        keys.STEPS: float(result.steps),
        keys.NOISE_MULTIPLIER: noise,
        keys.SAMPLE_RATE: result.sample_rate,
    }
    if site.release.releases_training_loss:
        metrics[keys.LOSS] = result.loss
    return RoundOutcome(trained, metrics, sign_statement(payload, site.signing_key), encoded)


def released_weight(site: SiteRuntime, num_examples: int) -> int:
    """The aggregation weight a site signs: its count as its release policy lets it leave."""
    return release_count(site.release, num_examples) or site.release.count_rounding


def _nonprivate_round(
    cfg: ExperimentConfig, site: SiteRuntime, state: StateDict, ctx: RoundContext
) -> RoundOutcome:
    """A baseline without DP: the store records it, and the data set's epsilon is infinite."""
    if site.require_dp:
        raise refusal(
            site,
            ctx,
            "this site trains only with DP-SGD; the run has privacy disabled "
            "(set privacy.enabled=true)",
        )
    with BudgetStore.open(site.budget_store, anchor=site.anchor) as store:
        record_nonprivate(
            store,
            dataset_id=site.dataset_id,
            run_id=ctx.run_id,
            round=ctx.server_round,
            policy=site.policy,
            fingerprint=site.fingerprint,
            records=site.records,
            purpose=ctx.purpose,
        )
    weights = class_weights(cfg, site, ctx, private=False)
    trained, result = _train(cfg, site, state, ctx, dp=None, randomness=None, class_weights=weights)
    trained, encoded = _compact(cfg, site, ctx, trained, state)
    return _outcome(
        site,
        ctx,
        trained,
        result,
        epsilon=None,
        noise=0.0,
        delta=0.0,
        randomness=None,
        encoded=encoded,
    )


def train_round(
    cfg: ExperimentConfig, site: SiteRuntime, state: StateDict, ctx: RoundContext
) -> RoundOutcome:
    """One round at a site, one process at a time per budget store (see `_train_round`)."""
    _model(cfg, state)  # a malformed model is refused before anything is reserved or charged
    resolve_device(cfg.training.device)  # so is a device this site does not have
    with round_lock(site.budget_store):
        return _train_round(cfg, site, state, ctx)


def _resend(site: SiteRuntime, ctx: RoundContext, input_digest: str) -> RoundOutcome:
    """A round the site already completed: the same update again, never a second training."""
    cached = load_update(site.budget_store.parent, ctx.run_id, ctx.server_round)
    if cached is None or cached.input_digest != input_digest:
        raise refusal(
            site,
            ctx,
            "it already trained this round and no longer holds that update; it will "
            "not train (or be charged for) it twice",
        )
    log.warning(
        "site %s re-sends its round %d update: no new training, no new charge",
        site.name,
        ctx.server_round,
    )
    return RoundOutcome(cached.state, cached.metrics, cached.attestation, cached.encoded)


def _check_steps(site: SiteRuntime, ctx: RoundContext, taken: int, reserved: int) -> None:
    """The sampler's steps must equal the reservation's, else the update is withheld."""
    if taken != reserved:
        raise refusal(
            site,
            ctx,
            f"DP-SGD took {taken} steps, {reserved} were reserved; the update is withheld",
        )


def _train_round(
    cfg: ExperimentConfig, site: SiteRuntime, state: StateDict, ctx: RoundContext
) -> RoundOutcome:
    """Reserve the round's budget, train, keep the update, charge the steps, sign what was done.

    The reservation (cap, noise floor, purpose, pinned unit and data fingerprint) is written
    before training and binds the noise, rate, steps, unit, the run's config digest and the
    input model: a replay trains only as reserved. A round the site already completed gets
    the same update again, never a second training. Noise and sampling come from the site's
    own OS randomness. The epsilon is composed over the data set's whole history, across runs.
    """
    if not cfg.privacy.enabled:
        return _nonprivate_round(cfg, site, state, ctx)
    check_request(cfg, site, ctx)
    weights = class_weights(cfg, site, ctx, private=True)  # refused before anything is charged
    rounds = expected_rounds(cfg.strategy.fraction_train, cfg.training.rounds)
    plan = site_plan(
        cfg.privacy,
        cfg.training,
        n_train=site.data.n_train,
        rounds=rounds,
        cache=PlanCache(site.budget_store.parent, site.signing_key),
    )
    charge = Charge(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
    randomness = site_randomness(deployed=site.require_dp, salt=ctx.server_round)
    policy = site.policy
    input_digest = arrays_digest({k: v.numpy() for k, v in state.items()})
    binding = {
        "config_digest": config_digest(cfg),
        "input_digest": input_digest,
        "max_grad_norm": cfg.privacy.max_grad_norm,
        "randomness": randomness.name,
    }
    folder = site.budget_store.parent
    with BudgetStore.open(site.budget_store, anchor=site.anchor) as store:
        reservation = store.reserve(
            dataset_id=site.dataset_id,
            run_id=ctx.run_id,
            round=ctx.server_round,
            charge=charge,
            policy=policy,
            purpose=ctx.purpose,
            fingerprint=site.fingerprint,
            records=site.records,
            binding=binding,
        )
        if reservation.replayed and reservation.status == "completed":
            return _resend(site, ctx, input_digest)
        bound = reservation.charge  # a replay of a crashed round trains exactly as reserved
        dp = DpSettings(bound.noise_multiplier, cfg.privacy.max_grad_norm)
        trained, result = _train(
            cfg, site, state, ctx, dp=dp, randomness=randomness, class_weights=weights
        )
        _check_steps(site, ctx, result.steps, reservation.planned_steps)
        trained, encoded = _compact(cfg, site, ctx, trained, state)
        # The reservation already counts the planned steps, so this is the spend after the round.
        epsilon = store.spent(site.dataset_id, delta=policy.delta, accountant=policy.accountant)
        outcome = _outcome(
            site,
            ctx,
            trained,
            result,
            epsilon=epsilon,
            noise=bound.noise_multiplier,
            delta=policy.delta,
            randomness=randomness.name,
            encoded=encoded,
        )
        save_update(
            folder,
            ctx.run_id,
            ctx.server_round,
            input_digest=input_digest,
            state=outcome.state,
            metrics=outcome.metrics,
            attestation=outcome.attestation,
            encoded=outcome.encoded,
        )
        store.complete(reservation, steps_taken=result.steps)
    return outcome


def evaluate_round(
    cfg: ExperimentConfig, site: SiteRuntime, state: StateDict, ctx: RoundContext
) -> dict[str, float]:
    """Held-out metrics of the global model, as the site's release policy lets them leave.

    One evaluation per (run, round) of a round the site trained in, recorded in its store;
    under `dp` the Gaussian mechanism on the counts is charged to the same budget first.
    """
    with round_lock(site.budget_store):
        return _evaluate_round(cfg, site, state, ctx)


def _evaluate_round(
    cfg: ExperimentConfig, site: SiteRuntime, state: StateDict, ctx: RoundContext
) -> dict[str, float]:
    data: SiteData = site.data
    policy = site.release
    counts = eval_counts(
        _model(cfg, state),
        data.x_test,
        data.y_test,
        device=resolve_device(cfg.training.device),
        loss_clip=policy.loss_clip,
        prior=decision_prior(cfg, site, ctx),
        balanced_decision=cfg.training.decision_rule == "balanced",
    )
    charge = None
    gaussian = None
    if policy.evaluation == "dp":
        charge = Charge(policy.eval_noise_multiplier, 1.0, 1)
        gaussian = site_randomness(deployed=site.require_dp, salt=ctx.server_round).standard_normal
    released = release_evaluation(policy, counts, gaussian)
    with BudgetStore.open(site.budget_store, anchor=site.anchor) as store:
        return record_evaluation(
            store,
            dataset_id=site.dataset_id,
            run_id=ctx.run_id,
            round=ctx.server_round,
            mode=policy.evaluation,
            model_digest=arrays_digest({k: v.numpy() for k, v in state.items()}),
            released=released,
            charge=charge,
            policy=site.policy,
            purpose=ctx.purpose,
            limit=policy.max_evaluations if policy.evaluation in ("exact", "rounded") else None,
        )
