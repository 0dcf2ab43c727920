"""`fedsafe audit privacy`: evidence that a site's epsilon is not an under-statement.

One audited site trains through its real round path (`client.local_round.train_round`: the
budget reservation, DP-SGD with the site's OS randomness, the charge in its own store, the
signed attestation) for the run's rounds, with m random canaries of which each is in its
training rows with probability 1/2 (the coins stay with the auditor). Each canary is scored the
way a coordinator reading every released update could: the round's change is fitted, jointly
over all canaries, onto their descent directions with the span of the site's own rows'
gradients taken out. The guesses give an empirical lower bound on epsilon at a stated
confidence (`common.privacy.audit_bound`), set beside the epsilon the site's accountant
charged. A black-box bound from the final model alone, and a loss-threshold membership
inference on the site's training vs held-out rows, are reported beside it.

The audited site is alone in its federation (every round's model is its own update), the
strongest position for the auditor: other sites' updates would only dilute the canaries'
trace. Its budget store lives in the audit's folder, so an audit never spends a real site's
budget.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsafe.client.local_round import RoundContext, train_round
from fedsafe.client.site import SiteRuntime, simulated_site
from fedsafe.common.config import ExperimentConfig, to_dict
from fedsafe.common.data import SiteData, dataset_info
from fedsafe.common.errors import ConfigError
from fedsafe.common.layout import federation_sites
from fedsafe.common.models import model_for
from fedsafe.common.privacy.audit_bound import (
    AuditBound,
    audit_guesses,
    epsilon_lower_bound,
    guess_counts,
)
from fedsafe.common.privacy.canaries import Canaries, canary_scores, draw_canaries

__all__ = ["run_privacy_audit", "membership_baseline", "format_audit"]

StateDict = dict[str, torch.Tensor]

_RIDGE = 0.01  # relative to unit-norm directions: keeps near-parallel ones from blowing up


def _with_canaries(data: SiteData, canaries: Canaries) -> SiteData:
    """The site's rows plus the included canaries; its record hashes are the arrays' own."""
    x_in, y_in = canaries.training_rows()
    return dataclasses.replace(
        data,
        x_train=np.concatenate([data.x_train, x_in.astype(data.x_train.dtype)]),
        y_train=np.concatenate([data.y_train, y_in.astype(data.y_train.dtype)]),
        raw_hashes=None,
        pre_feature_hashes=None,
    )


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


def _losses(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), np.asarray(y, dtype=np.int64)]


def membership_baseline(train_losses: np.ndarray, test_losses: np.ndarray) -> dict[str, float]:
    """Loss-threshold membership inference: AUROC of "low loss means member" and the best
    threshold's advantage (TPR - FPR); 0.5 and 0 mean the attack learns nothing."""
    scores = np.concatenate([-train_losses, -test_losses])
    member = np.concatenate([np.ones(len(train_losses)), np.zeros(len(test_losses))])
    if len(train_losses) == 0 or len(test_losses) == 0:
        return {"auroc": float("nan"), "advantage": float("nan")}
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="stable")
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # ties share their mean rank
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n1, n0 = len(train_losses), len(test_losses)
    auroc = (ranks[member == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    thresholds = np.unique(scores)
    tpr = (scores[member == 1][None, :] >= thresholds[:, None]).mean(axis=1)
    fpr = (scores[member == 0][None, :] >= thresholds[:, None]).mean(axis=1)
    return {"auroc": float(auroc), "advantage": float(np.max(tpr - fpr))}


def _audited_site(cfg: ExperimentConfig, name: str | None) -> tuple[str, int]:
    sites = federation_sites(cfg)
    chosen = name or sites[0]
    if chosen not in sites:
        raise ConfigError("--site", chosen, f"one of the federation's sites {list(sites)}")
    return chosen, sites.index(chosen)


def _gradients(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
    """Each row's loss gradient over the model's parameters, flattened, one row per record."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, p, (xi.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, yi.unsqueeze(0))

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(
        params, torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    )
    return torch.cat([grads[k].reshape(len(y), -1) for k in params], dim=1)


def _unit(d: torch.Tensor) -> torch.Tensor:
    return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _descent_directions(
    before: torch.nn.Module,
    after: torch.nn.Module,
    canaries: Canaries,
    rows: tuple[np.ndarray, np.ndarray],
) -> torch.Tensor:
    """Each canary's descent direction over a round (its negative gradient, averaged between the
    models at the round's start and end), with the span of the site's own rows' gradients at both
    points taken out, unit norm. The site's rows move the model along their gradients every
    step, which would drown a canary's one clipped step; what is left is where only the canaries
    (and the noise) move it."""
    own = torch.cat([_gradients(before, *rows), _gradients(after, *rows)])
    basis = torch.linalg.svd(own, full_matrices=False).Vh  # orthonormal rows spanning `own`
    keep = basis[: min(len(basis), own.shape[1] // 2)]
    d = _unit(-_gradients(before, canaries.x, canaries.y))
    d = d + _unit(-_gradients(after, canaries.x, canaries.y))
    return _unit(d - (d @ keep.T) @ keep)


def _coefficients(directions: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """How much of each canary's direction the change holds, all fitted at once (ridge least
    squares): canaries' directions overlap, and fitting each alone would credit one canary with
    its neighbours' steps."""
    gram = directions @ directions.T
    ridge = _RIDGE * torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(gram + ridge, directions @ change)


def _train(
    cfg: ExperimentConfig, site: SiteRuntime, run_id: str, canaries: Canaries
) -> tuple[StateDict, float, np.ndarray]:
    """The run's rounds at the site alone: the final model, the epsilon the site charged, and
    each canary's update score (its descent direction against each round's released change,
    summed over rounds: what a coordinator that reads every update could compute)."""
    info = dataset_info(cfg.dataset.name, cfg.dataset)
    before, after = model_for(cfg.model, info, seed=cfg.seed), model_for(cfg.model, info)
    state = {k: v.detach().clone() for k, v in before.state_dict().items()}
    names = [k for k, _ in before.named_parameters()]
    scores = np.zeros(canaries.m)
    own = len(site.data.y_train) - int(canaries.included.sum())
    rows = (site.data.x_train[:own], site.data.y_train[:own])
    epsilon = float("inf")
    for server_round in range(1, cfg.training.rounds + 1):
        ctx = RoundContext(run_id=run_id, server_round=server_round, purpose=cfg.compliance.purpose)
        outcome = train_round(cfg, site, state, ctx)
        before.load_state_dict(state)
        after.load_state_dict(outcome.state)
        directions = _descent_directions(before, after, canaries, rows)
        change = torch.cat([(outcome.state[k] - state[k]).reshape(-1).float() for k in names])
        scores += _coefficients(directions, change).double().numpy()
        state = outcome.state
        epsilon = float(outcome.metrics["epsilon"])
    return state, epsilon, scores


def _ceiling(m: int, *, delta: float, confidence: float) -> float:
    """The bound every guess right would give: no claim above it can be contradicted by m
    canaries, whatever the training path does."""
    each = 1.0 - (1.0 - confidence) / len(guess_counts(m))
    return epsilon_lower_bound(m, m, m, delta=delta, confidence=each)


def run_privacy_audit(
    cfg: ExperimentConfig,
    out_dir: Path,
    *,
    site_name: str | None = None,
    canaries: int = 512,
    confidence: float = 0.95,
    scale: float = 3.0,
) -> dict[str, Any]:
    """Audit one site of `cfg`'s federation; writes `audit.json` in `out_dir` and returns it."""
    run_id = f"audit-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time_ns() % 10**6):06d}"
    folder = out_dir / run_id  # the site's store and keys go in `folder / "sites"`
    audit_cfg = dataclasses.replace(
        cfg,
        runs_dir=str(out_dir),
        run_id=run_id,
        federation=dataclasses.replace(cfg.federation, fresh_budget=True),
    )
    name, partition = _audited_site(audit_cfg, site_name)
    site = simulated_site(audit_cfg, partition, run_id)
    info = dataset_info(cfg.dataset.name, cfg.dataset)
    drawn = draw_canaries(canaries, like=site.data.x_train, n_classes=info.n_classes, scale=scale)
    audited = dataclasses.replace(site, data=_with_canaries(site.data, drawn))
    started = time.perf_counter()
    state, claimed, update_scores = _train(audit_cfg, audited, run_id, drawn)
    model = model_for(cfg.model, info)
    model.load_state_dict(state)
    delta = cfg.privacy.delta if cfg.privacy.enabled else 0.0
    bound: AuditBound = audit_guesses(
        update_scores, drawn.included, delta=delta, confidence=confidence
    )
    final: AuditBound = audit_guesses(
        canary_scores(_logits(model, drawn.x), drawn.y),
        drawn.included,
        delta=delta,
        confidence=confidence,
    )
    data = site.data
    baseline = membership_baseline(
        _losses(_logits(model, data.x_train), data.y_train),
        _losses(_logits(model, data.x_test), data.y_test),
    )
    result: dict[str, Any] = {
        "site": name,
        "run_id": run_id,
        "private": cfg.privacy.enabled,
        "claimed_epsilon": claimed,
        "delta": delta,
        "rounds": cfg.training.rounds,
        "canaries": bound.canaries,
        "canaries_included": int(drawn.included.sum()),
        "guesses": bound.guesses,
        "correct": bound.correct,
        "confidence": confidence,
        "epsilon_lower_bound": bound.epsilon_lower_bound,
        "largest_possible_bound": _ceiling(canaries, delta=delta, confidence=confidence),
        "final_model": {
            "epsilon_lower_bound": final.epsilon_lower_bound,
            "guesses": final.guesses,
            "correct": final.correct,
        },
        "membership_inference": baseline,
        "n_train": data.n_train,
        "n_test": len(data.y_test),
        "seconds": round(time.perf_counter() - started, 1),
        "config": to_dict(cfg),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def format_audit(result: dict[str, Any]) -> str:
    """One paragraph an auditor can read: the bound beside the claim, and the verdict."""
    claimed = result["claimed_epsilon"]
    bound = result["epsilon_lower_bound"]
    mia = result["membership_inference"]
    verdict = (
        "CONTRADICTED: the run leaks more than its accountant claims"
        if bound > claimed
        else "consistent: no evidence that the claim is an under-statement"
    )
    return "\n".join(
        [
            f"site {result['site']}: {result['rounds']} rounds, {result['n_train']} training rows "
            f"+ {result['canaries_included']} of {result['canaries']} canaries",
            f"  accountant's epsilon        {claimed:.3f} (delta {result['delta']:g})",
            f"  lower bound from updates    {bound:.3f} at {result['confidence']:.0%} confidence "
            f"({result['correct']} of {result['guesses']} guesses correct)",
            f"  most {result['canaries']} canaries can show  "
            f"{result['largest_possible_bound']:.3f} (every guess right)",
            f"  from the final model alone  {result['final_model']['epsilon_lower_bound']:.3f} "
            f"({result['final_model']['correct']} of {result['final_model']['guesses']} correct)",
            f"  membership inference (loss) AUROC {mia['auroc']:.3f}, "
            f"advantage {mia['advantage']:.3f}",
            f"  verdict: {verdict}",
        ]
    )
