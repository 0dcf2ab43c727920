"""Plain torch loops for one site: DP-SGD training through Opacus, and held-out evaluation."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "balanced_class_weights",
    "DpSettings",
    "LocalResult",
    "EvalResult",
    "resolve_device",
    "train_local",
    "evaluate",
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
    """`auto` picks CUDA when present, the CPU otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def dp_sample_rate(n_train: int, batch_size: int) -> float:
    """The Poisson rate Opacus really uses: 1 / batches per epoch (not batch_size / n)."""
    return 1.0 / math.ceil(n_train / batch_size)


def _loader(
    x: np.ndarray, y: np.ndarray, batch_size: int, generator: torch.Generator
) -> DataLoader:
    data = TensorDataset(torch.from_numpy(x).float(), torch.from_numpy(y).long())
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)


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
    proximal_mu: float = 0.0,
    seed: int = 0,
    class_weights: np.ndarray | None = None,
    momentum: float = 0.0,
) -> LocalResult:
    """Train in place; with `dp`, Opacus DP-SGD with Poisson sampling and per-sample clipping.

    The FedProx term is applied as a separate step after each (noisy) optimiser step: it
    depends only on the public global weights, so it is post-processing and leaves the
    guarantee intact (folding it into the loss would be silently dropped by Opacus,
    which rebuilds gradients from per-sample ones).
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    loader = _loader(x, y, batch_size, generator)
    optimizer: torch.optim.Optimizer = torch.optim.SGD(
        model.parameters(), lr=learning_rate, momentum=momentum
    )
    sample_rate = 1.0 / len(loader)
    module: nn.Module = model
    if dp is not None:
        from opacus import PrivacyEngine

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]ecure.*")
            engine = PrivacyEngine(accountant="rdp")
            module, optimizer, loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=dp.noise_multiplier,
                max_grad_norm=dp.max_grad_norm,
                poisson_sampling=True,
                noise_generator=torch.Generator().manual_seed(seed + 1),
            )
        sample_rate = float(loader.sample_rate)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    weight = (
        None
        if class_weights is None
        else torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    )
    # Per-sample clipping bounds each example's (weighted) gradient, so the guarantee holds.
    criterion = nn.CrossEntropyLoss(weight=weight)
    steps, loss_sum, seen = 0, 0.0, 0
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad(set_to_none=True)
            if len(yb):
                out = module(xb)
                loss = criterion(out, yb)
                loss.backward()
                loss_sum += float(loss.detach()) * len(yb)
                seen += len(yb)
            optimizer.step()  # an empty Poisson batch is still a (noise-only) step
            steps += 1
            if anchor is not None:
                with torch.no_grad():
                    for p, a in zip(model.parameters(), anchor, strict=True):
                        p.sub_(learning_rate * proximal_mu * (p - a))
    if dp is not None:
        module.remove_hooks()  # type: ignore[operator]  # GradSampleModule's own cleanup
    return LocalResult(
        loss=loss_sum / max(seen, 1), steps=steps, sample_rate=sample_rate, num_examples=len(y)
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, *, device: torch.device) -> EvalResult:
    """Loss, accuracy, balanced accuracy and AUROC on held-out rows."""
    model.to(device).eval()
    logits = model(torch.from_numpy(x).float().to(device))
    target = torch.from_numpy(y).long().to(device)
    loss = float(nn.functional.cross_entropy(logits, target))
    prob = torch.softmax(logits, dim=1).cpu().numpy()
    pred = prob.argmax(axis=1)
    accuracy = float((pred == y).mean()) if len(y) else math.nan
    n_classes = prob.shape[1]
    present = np.unique(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(y, pred)) if len(y) else math.nan
        if len(present) < 2:
            auroc = math.nan
        elif n_classes == 2:
            auroc = float(roc_auc_score(y, prob[:, 1]))
        else:  # one-vs-rest, macro over the classes this split holds (label skew leaves gaps)
            auroc = float(np.mean([roc_auc_score(y == c, prob[:, c]) for c in present]))
    return EvalResult(loss, accuracy, balanced, auroc, len(y))


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * n_c) from the site's own labels; a class the site lacks gets weight 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights
