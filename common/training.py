"""Plain torch loops for one site: DP-SGD training (fused or Opacus), and held-out evaluation."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsafe.common.errors import ConfigError
from fedsafe.common.heldout_metrics import auroc_binary, auroc_one_vs_rest, balanced_accuracy
from fedsafe.common.privacy.dp_sgd import (
    OPACUS,
    PrivateGradient,
    batches_per_epoch,
    mechanism_for,
    poisson_batches,
    site_loss,
)
from fedsafe.common.privacy.randomness import Randomness
from fedsafe.common.release_policy import EvalCounts
from fedsafe.common.sgd import PlainSgd

__all__ = [
    "balanced_class_weights",
    "DpSettings",
    "LocalResult",
    "EvalResult",
    "resolve_device",
    "train_local",
    "evaluate",
    "eval_counts",
    "dp_sample_rate",
]


@dataclass(frozen=True)
class DpSettings:
    """What DP-SGD needs at the site: the noise was chosen before training starts."""

    noise_multiplier: float
    max_grad_norm: float


@dataclass(frozen=True)
class LocalResult:
    """What a round of local training did, as the accountant must see it."""

    loss: float
    steps: int
    sample_rate: float
    num_examples: int


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    balanced_accuracy: float
    auroc: float  # NaN when the held-out split has a single class
    num_examples: int


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, the CPU otherwise; `cuda` where this process sees no
    CUDA device is a ConfigError naming the setting (not torch's assertion mid-round)."""
    cuda = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "cpu")
    if name.startswith("cuda") and not cuda:
        raise ConfigError(
            "training.device",
            name,
            "a device this process has: it sees no CUDA device (a CPU-only torch, no driver, "
            "or CUDA_VISIBLE_DEVICES empty, as Ray sets it for a site given no GPU); use auto "
            "or cpu",
        )
    return torch.device(name)


def dp_sample_rate(n_train: int, batch_size: int) -> float:
    """The Poisson rate DP-SGD really uses: 1 / batches per epoch (not batch_size / n)."""
    return 1.0 / batches_per_epoch(n_train, batch_size)


def _plain_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch for non-private training (reproducible from the run seed)."""
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    device: torch.device,
    dp: DpSettings | None,
    randomness: Randomness | None = None,
    proximal_mu: float = 0.0,
    seed: int = 0,
    class_weights: np.ndarray | None = None,
    momentum: float = 0.0,
) -> LocalResult:
    """Train in place; with `dp`, DP-SGD: Poisson sampling, per-example clipping, Gaussian noise.

    Under DP the sampling and the noise come from `randomness` (the site's OS CSPRNG), never
    from `seed`, which only orders a non-private baseline. Each epoch is exactly
    ceil(n / B) steps, empty Poisson batches included, so the steps equal the reservation.
    The FedProx term is applied as a separate step after each (noisy) optimiser step: it
    depends only on the public global weights, so it is post-processing and leaves the
    guarantee intact.
    """
    model.to(device).train()
    features = torch.from_numpy(x).float().to(device)
    labels = torch.from_numpy(y).long().to(device)
    # The fused DP path needs only the update (no torch.optim: its first use costs ~1 s)
    fused = dp is not None and mechanism_for(model) != OPACUS
    optimizer: torch.optim.Optimizer | PlainSgd = (
        PlainSgd(model.parameters(), lr=learning_rate, momentum=momentum)
        if fused
        else torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    )
    n = len(y)
    sample_rate = 1.0 / batches_per_epoch(n, batch_size)
    private: PrivateGradient | None = None
    if dp is not None:
        if randomness is None:
            raise ValueError("DP-SGD needs the site's randomness (common.privacy.randomness)")
        private = PrivateGradient(
            model,
            optimizer,
            n_train=n,
            batch_size=batch_size,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            randomness=randomness,
            steps=epochs * batches_per_epoch(n, batch_size),
        )
        optimizer, sample_rate = private.optimizer, private.sample_rate
    generator = torch.Generator().manual_seed(seed)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    weight = (
        None
        if class_weights is None
        else torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    )
    steps, loss_sum, seen = 0, 0.0, 0
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    try:
        for _ in range(epochs):
            if dp is not None:
                assert randomness is not None
                epoch = [torch.from_numpy(b) for b in poisson_batches(n, batch_size, randomness)]
            else:
                epoch = _plain_batches(n, batch_size, generator)
            for index in epoch:
                xb, yb = features[index.to(device)], labels[index.to(device)]
                if private is not None:
                    loss = private.set_gradients(xb, yb, weight)  # an empty batch: noise only
                else:
                    optimizer.zero_grad(set_to_none=True)
                    loss = site_loss(model(xb), yb, weight)
                    loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(yb)
                seen += len(yb)
                steps += 1
                if anchor is not None:
                    with torch.no_grad():
                        for p, a in zip(model.parameters(), anchor, strict=True):
                            p.sub_(learning_rate * proximal_mu * (p - a))
    finally:  # the fused path's noise thread stops even when a step fails
        if private is not None:
            private.close()
    return LocalResult(
        loss=loss_sum / max(seen, 1), steps=steps, sample_rate=sample_rate, num_examples=n
    )


@torch.no_grad()
def eval_counts(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    device: torch.device,
    loss_clip: float,
    prior: np.ndarray | None = None,
    balanced_decision: bool = False,
) -> EvalCounts:
    """Held-out statistics before any release policy: counts, clipped loss sum and metrics.

    With `prior` (a declared class prevalence) the decision is argmax p(c|x) / prior_c instead
    of argmax p(c|x); with `balanced_decision`, argmax p(c|x) / m_c for m_c the mean of
    p(c|x) over these rows (no label read). Loss and AUROC do not depend on the decision."""
    model.to(device).eval()
    logits = model(torch.from_numpy(x).float().to(device))
    target = torch.from_numpy(y).long().to(device)
    losses = nn.functional.cross_entropy(logits, target, reduction="none").cpu().numpy()
    prob = torch.softmax(logits, dim=1).cpu().numpy()
    scores = logits.detach().cpu().numpy()
    if prior is not None:
        scores = scores - np.log(prior)
    if balanced_decision and len(prob):
        scores = scores - np.log(np.maximum(prob.mean(axis=0), 1e-12))
    pred = scores.argmax(axis=1)
    n = len(y)
    correct = int((pred == y).sum())
    n_classes = prob.shape[1]
    present = np.unique(y)
    balanced = balanced_accuracy(y, pred) if n else math.nan
    if len(present) < 2:
        auroc = math.nan
    elif n_classes == 2:
        auroc = auroc_binary(y == 1, prob[:, 1])
    else:  # one-vs-rest, macro over the classes this split holds (label skew leaves gaps)
        auroc = auroc_one_vs_rest(y, prob)
    return EvalCounts(
        n=n,
        correct=correct,
        loss_sum_clipped=float(np.minimum(losses, loss_clip).sum()),
        loss=float(losses.mean()) if n else math.nan,
        accuracy=correct / n if n else math.nan,
        balanced_accuracy=balanced,
        auroc=auroc,
    )


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, *, device: torch.device) -> EvalResult:
    """Loss, accuracy, balanced accuracy and AUROC on held-out rows (exact: site-local use)."""
    c = eval_counts(model, x, y, device=device, loss_clip=math.inf)
    return EvalResult(c.loss, c.accuracy, c.balanced_accuracy, c.auroc, c.n)


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * n_c) from the site's own labels; a class the site lacks gets weight 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights
