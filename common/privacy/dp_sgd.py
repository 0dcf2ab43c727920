"""DP-SGD at a site, built from Opacus' parts with the site's own randomness.

Opacus clips every example's gradient to C (`GradSampleModule` + `DPOptimizer`); fedsafe
supplies what Opacus' `PrivacyEngine` would take from a torch generator: Poisson sampling and
Gaussian noise drawn from `Randomness` (the OS CSPRNG at a real site). The batch count per
epoch is exactly ceil(n / B) at rate 1 / ceil(n / B), so the steps taken equal the steps the
site reserved, and an empty Poisson batch is still a noise-only step.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.validators import ModuleValidator
from torch import nn

from fedsafe.common.privacy.fused_dp import FusedDP, FusedLinearDP, supports_fused
from fedsafe.common.privacy.fused_layers import FusedLayersDP, supports_layers
from fedsafe.common.privacy.randomness import Randomness
from fedsafe.common.sgd import PlainSgd

__all__ = [
    "SiteDPOptimizer",
    "site_loss",
    "poisson_batches",
    "private_parts",
    "clipped_gradient_sum",
    "batches_per_epoch",
    "PrivateGradient",
    "FUSED",
    "FUSED_LAYERS",
    "OPACUS",
    "mechanism_for",
]

FUSED = "fused-linear"  # closed-form per-example norms for Linear/ReLU stacks (fused_dp.py)
FUSED_LAYERS = "fused-layers"  # one backward to each layer's output: conv nets (fused_layers.py)
OPACUS = "opacus"  # Opacus' GradSampleModule + SiteDPOptimizer, for every other model
_FUSED: dict[str, type[FusedDP]] = {FUSED: FusedLinearDP, FUSED_LAYERS: FusedLayersDP}


def mechanism_for(model: nn.Module) -> str:
    """The fastest mechanism that computes `model`'s clipped sum exactly."""
    if supports_fused(model):
        return FUSED
    return FUSED_LAYERS if supports_layers(model) else OPACUS


def batches_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps in one epoch: ceil(n / B), the plain loader's batch count (rate 1 / that)."""
    return max(1, math.ceil(n_train / batch_size))


def site_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch of each example's own (weighted) loss: Opacus' `loss_reduction` contract.

    torch's weighted CrossEntropyLoss divides by the batch's summed weights, so one record would
    change every other record's gradient; here each example's loss is its own term times a
    fixed class weight, so its clipped gradient depends on it alone and the sensitivity is C.
    An empty batch has loss 0 (a noise-only step), never NaN.
    """
    per_example = nn.functional.cross_entropy(logits, y, reduction="none")
    if weight is not None:
        per_example = per_example * weight[y]
    return per_example.sum() / max(len(y), 1)


class SiteDPOptimizer(DPOptimizer):
    """Opacus' DPOptimizer whose Gaussian noise comes from the site's `Randomness`."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, randomness: Randomness, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(optimizer, **kwargs)
        self.randomness = randomness

    def add_noise(self) -> None:
        """One draw for every parameter of the step (fewer OS calls), then split per tensor."""
        std = self.noise_multiplier * self.max_grad_norm
        params = list(self.params)
        for p in params:
            _check_processed_flag(p.summed_grad)
        sizes = [p.summed_grad.numel() for p in params]
        flat = self.randomness.gaussian(
            torch.Size([sum(sizes)]), std=std, like=params[0].summed_grad
        )
        for p, noise in zip(params, flat.split(sizes), strict=True):
            p.grad = (p.summed_grad + noise.view_as(p.summed_grad).to(p.summed_grad)).view_as(p)
            _mark_as_processed(p.summed_grad)


def private_parts(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    n_train: int,
    batch_size: int,
    noise_multiplier: float,
    max_grad_norm: float,
    randomness: Randomness,
) -> tuple[GradSampleModule, SiteDPOptimizer, float]:
    """The per-sample-gradient module, the DP optimizer and the real Poisson sample rate."""
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not valid for DP-SGD (per-sample gradients): {errors}")
    sample_rate = 1.0 / batches_per_epoch(n_train, batch_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure.*")
        module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        dp_optimizer = SiteDPOptimizer(
            optimizer,
            randomness=randomness,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=max(1, int(n_train * sample_rate)),
            loss_reduction="mean",
        )
    return module, dp_optimizer, sample_rate


def poisson_batches(n_train: int, batch_size: int, randomness: Randomness) -> list[np.ndarray]:
    """One epoch of Poisson batches: ceil(n / B) index arrays, each record in with rate 1/that."""
    steps = batches_per_epoch(n_train, batch_size)
    rate = 1.0 / steps
    masks = randomness.poisson_mask(n_train * steps, rate).reshape(steps, n_train)  # one draw
    return [np.flatnonzero(mask) for mask in masks]


class PrivateGradient:
    """One DP-SGD step's gradient at a site, whichever mechanism computes it: `set_gradients`
    leaves every parameter's `.grad` = (sum of clipped per-example gradients + N(0, (sigma C)^2))
    / expected batch size, and `optimizer.step()` applies it. Both mechanisms clip the whole
    per-example gradient to C with Opacus' factor and draw the noise from the site's
    `Randomness`; a fused one is chosen when it computes the model exactly. `steps`, when
    known, keeps the fused path from drawing noise that no step would use; `prefetch_noise`
    lets it draw the next steps' OS noise on a second thread while these train."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | PlainSgd,
        *,
        n_train: int,
        batch_size: int,
        noise_multiplier: float,
        max_grad_norm: float,
        randomness: Randomness,
        steps: int | None = None,
        prefetch_noise: bool = True,
    ) -> None:
        self.sample_rate = 1.0 / batches_per_epoch(n_train, batch_size)
        self._module: GradSampleModule | None = None
        self._fused: FusedDP | None = None
        self.mechanism = mechanism_for(model)
        if self.mechanism != OPACUS:
            self._fused = _FUSED[self.mechanism](
                model,
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                expected_batch_size=max(1, int(n_train * self.sample_rate)),
                randomness=randomness,
                steps=steps,
                prefetch_noise=prefetch_noise,
            )
            self.optimizer: torch.optim.Optimizer | PlainSgd = optimizer
        else:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError("Opacus' DP-SGD wraps a torch.optim optimizer, not PlainSgd")
            self._module, self.optimizer, _ = private_parts(
                model,
                optimizer,
                n_train=n_train,
                batch_size=batch_size,
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                randomness=randomness,
            )

    def set_gradients(
        self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        """The batch's mean loss; the gradient is left for `optimizer.step()` (Opacus clips and
        noises inside its step, the fused path before it)."""
        if self._fused is not None:
            return self._fused.set_gradients(x, y, weight)
        assert self._module is not None
        self.optimizer.zero_grad(set_to_none=True)
        # contiguous: Opacus' conv per-sample gradients are wrong on a channels_last batch
        loss = site_loss(self._module(x.contiguous()), y, weight)  # empty batch: noise only
        loss.backward()
        return loss.detach()

    def close(self) -> None:
        """Take Opacus' hooks off the model, or stop the fused path's noise thread."""
        if self._module is not None:
            self._module.remove_hooks()  # type: ignore[operator]
        if self._fused is not None:
            self._fused.close()


def clipped_gradient_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_grad_norm: float,
    weight: torch.Tensor | None,
    randomness: Randomness,
    mechanism: str | None = None,
) -> list[torch.Tensor]:
    """The sum of the batch's clipped per-example gradients, as DP-SGD computes it before noise.

    Exactly the training path's loss and clipping (the mechanism `PrivateGradient` picks for
    this model, or the one named): the quantity whose sensitivity to adding or removing one
    record must be at most `max_grad_norm`.
    """
    use = mechanism or mechanism_for(model)
    if use != OPACUS:
        fused = _FUSED[use](
            model,
            noise_multiplier=0.0,
            max_grad_norm=max_grad_norm,
            expected_batch_size=1,
            randomness=randomness,
        )
        return [s.detach().clone() for s in fused.clipped_sum(x, y, weight)[0]]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    module, dp_optimizer, _ = private_parts(
        model,
        optimizer,
        n_train=max(len(y), 1),
        batch_size=max(len(y), 1),
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        randomness=randomness,
    )
    dp_optimizer.zero_grad(set_to_none=True)
    site_loss(module(x.contiguous()), y, weight).backward()  # channels_last: see set_gradients
    dp_optimizer.clip_and_accumulate()
    sums = [p.summed_grad.detach().clone() for p in dp_optimizer.params]
    module.remove_hooks()
    return sums
