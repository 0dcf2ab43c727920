"""One private round at a site: load the global model, train with DP-SGD, account, evaluate."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from common import keys
from common.config import ExperimentConfig
from common.data import SiteData, dataset_info
from common.models import model_for
from common.privacy import Charge, epsilon_for
from common.privacy.planner import plan_site
from common.training import DpSettings, evaluate, resolve_device, train_local

__all__ = ["RoundOutcome", "train_round", "evaluate_round", "round_seed"]

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RoundOutcome:
    """The updated weights, the scalar metrics to report and the site's new DP history."""

    state: StateDict
    metrics: dict[str, float]
    history: tuple[Charge, ...]


def round_seed(cfg: ExperimentConfig, site: str, server_round: int) -> int:
    """A per-site, per-round seed derived from the run seed: reproducible, never shared."""
    digest = hashlib.sha256(f"{cfg.seed}/{site}/{server_round}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _model(cfg: ExperimentConfig, state: StateDict) -> torch.nn.Module:
    model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset))
    model.load_state_dict(state)
    return model


def train_round(
    cfg: ExperimentConfig,
    data: SiteData,
    state: StateDict,
    *,
    server_round: int,
    history: tuple[Charge, ...],
    proximal_mu: float = 0.0,
) -> RoundOutcome:
    """Train on the site's rows; epsilon reported is for the whole history, this round included."""
    model = _model(cfg, state)
    dp: DpSettings | None = None
    if cfg.privacy.enabled:
        plan = plan_site(cfg.privacy, cfg.training, n_train=data.n_train)
        dp = DpSettings(plan.noise_multiplier, cfg.privacy.max_grad_norm)
    result = train_local(
        model,
        data.x_train,
        data.y_train,
        epochs=cfg.training.local_epochs,
        batch_size=cfg.training.batch_size,
        learning_rate=cfg.training.learning_rate,
        device=resolve_device(cfg.training.device),
        dp=dp,
        proximal_mu=proximal_mu,
        seed=round_seed(cfg, data.site, server_round),
    )
    if dp is not None:
        history = (*history, Charge(dp.noise_multiplier, result.sample_rate, result.steps))
        epsilon = epsilon_for(history, delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
        noise = dp.noise_multiplier
    else:
        epsilon, noise = math.inf, 0.0
    metrics = {
        keys.NUM_EXAMPLES: float(result.num_examples),
        keys.LOSS: result.loss,
        keys.EPSILON: epsilon,
        keys.DELTA: cfg.privacy.delta if dp is not None else 0.0,
        keys.STEPS: float(result.steps),
        keys.NOISE_MULTIPLIER: noise,
        keys.SAMPLE_RATE: result.sample_rate,
    }
    trained = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return RoundOutcome(trained, metrics, history)


def evaluate_round(cfg: ExperimentConfig, data: SiteData, state: StateDict) -> dict[str, float]:
    """Held-out metrics of the global model on this site's own split."""
    result = evaluate(_model(cfg, state), data.x_test, data.y_test, device=resolve_device(cfg.training.device))
    return {
        keys.NUM_EXAMPLES: float(result.num_examples),
        keys.LOSS: result.loss,
        keys.ACCURACY: result.accuracy,
        keys.BALANCED_ACCURACY: result.balanced_accuracy,
        keys.AUROC: result.auroc,
    }
