"""DP-SGD's clipped gradient sum for stacks of Linear and ReLU, in closed form, in one pass.

For a Linear layer the gradient of one example's loss is the outer product of the layer's
output gradient d_i and its input a_i, so its norm is |d_i| |a_i| (plus |d_i| for the bias):
every example's full gradient norm comes from the forward activations and one backward sweep,
without materialising the per-example gradients (the "ghost norm" of Goodfellow 2015 and Li et
al. 2022). The clipped sum is then one matrix product per layer, (c * d)^T a. The mechanism is
Opacus' exactly: flat clipping of each example's whole gradient to C with Opacus' clip factor
min(1, C / (norm + 1e-6)), Gaussian noise of std sigma * C on the sum, drawn from the site's
`Randomness`, and division by the expected batch size. For the tiny tabular models a site
trains, Opacus' hooks cost more in Python than the arithmetic; this path does the same sums
with a handful of tensor calls (`make bench`, dp_step).

`FusedDP` holds what every fused step shares: the noise (drawn from the site's randomness for
several steps at once, each row used once) and one flat gradient buffer whose views are the
parameters' `.grad`. `fused_layers.py` adds conv nets; every other model uses Opacus.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import nn
from torch.nn.utils import parametrize

from fedsafe.common.allocator import keep_freed_memory
from fedsafe.common.privacy.randomness import Randomness

__all__ = [
    "FusedDP",
    "FusedLinearDP",
    "supports_fused",
    "clip_factor",
    "example_losses",
    "NOISE_STEPS",
]

_CLIP_EPS = 1e-6  # Opacus' own: clip factor C / (norm + 1e-6)
NOISE_STEPS = 32  # steps of noise drawn from the OS at once: one call, not one per step


def plain_layers(model: nn.Module) -> list[nn.Module] | None:
    """The entries of a Sequential whose forward is only its layers in order (a plain
    `nn.Sequential`, or a subclass that declares `flattens_input` and flattens first), with no
    hooks, every parameter trainable and owned by exactly one entry (a parameter tied between
    two layers, a parametrized weight or a frozen one is Opacus' to compute), else None."""
    if not isinstance(model, nn.Sequential):
        return None
    if type(model) is not nn.Sequential and not getattr(type(model), "flattens_input", False):
        return None
    layers = list(model)  # every entry in order; `children()` would drop a repeated one
    if not layers or any(_hooked(m) for m in (model, *layers)):
        return None
    if any(parametrize.is_parametrized(layer) for layer in layers):
        return None
    owners = list({id(layer): layer for layer in layers}.values())  # a repeat runs twice
    owned = [p for layer in owners for p in layer.parameters(recurse=False)]
    every = list(model.parameters())
    if len({id(p) for p in owned}) != len(owned) or {id(p) for p in owned} != {
        id(p) for p in every
    }:
        return None
    if not all(p.requires_grad for p in every):
        return None  # a frozen layer: Opacus leaves it out of the gradient; so must a step
    return layers


def _hooked(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _layers(model: nn.Module) -> list[nn.Module] | None:
    """The model's layers in order when it is a plain Sequential of Linear and ReLU that
    starts and ends with a Linear, no Linear in two places."""
    layers = plain_layers(model)
    if layers is None or type(layers[0]) is not nn.Linear or type(layers[-1]) is not nn.Linear:
        return None
    linears = [layer for layer in layers if type(layer) is nn.Linear]
    if len({id(layer) for layer in linears}) != len(linears):
        return None  # one Linear in two places shares its weights: Opacus computes that
    for layer in layers:
        if type(layer) is nn.Linear:
            if layer.bias is None:
                return None
        elif type(layer) is not nn.ReLU:
            return None
    return layers


def clip_factor(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Opacus' per-example factor: min(1, C / (norm + 1e-6))."""
    return (max_grad_norm / (norms + _CLIP_EPS)).clamp(max=1.0)


def supports_fused(model: nn.Module) -> bool:
    """Whether `model` is a stack this path computes exactly (logreg, the MLP)."""
    return _layers(model) is not None


class FusedDP(ABC):
    """One DP-SGD gradient per call: `p.grad` is set to (sum of clipped per-example gradients
    + N(0, (sigma C)^2)) / expected batch size. Subclasses compute the clipped sum."""

    def __init__(
        self,
        model: nn.Module,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        randomness: Randomness,
        steps: int | None = None,
        prefetch_noise: bool = True,
    ) -> None:
        if noise_multiplier < 0 or max_grad_norm <= 0 or expected_batch_size < 1:
            raise ValueError(
                f"need noise >= 0, C > 0, expected batch >= 1; got {noise_multiplier}, "
                f"{max_grad_norm}, {expected_batch_size}"
            )
        params = self._bind(model)
        self.flattens = bool(getattr(type(model), "flattens_input", False))
        self.params = params
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.expected_batch_size = expected_batch_size
        self.randomness = randomness
        self._size = sum(p.numel() for p in self.params)
        # every `.grad` is a view of one flat buffer: the sums are written into it, the noise
        # added and the scale applied with one call each, not three calls per parameter
        self._flat = torch.zeros(self._size, dtype=params[0].dtype, device=params[0].device)
        self._views: list[torch.Tensor] = []
        offset = 0
        for p in self.params:
            self._views.append(self._flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        self._noise = torch.empty(0)
        self._used = 0
        self._steps_left = steps  # known: draw no noise that no step will use
        # OS noise for the next steps is drawn on a second thread while these steps train
        # (torch and numpy release the GIL); seeded test noise stays in order, on this thread
        self._background = prefetch_noise and randomness.private and noise_multiplier > 0
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[torch.Tensor] | None = None
        self._pid = os.getpid()  # a forked child must never use rows its parent also holds
        keep_freed_memory()  # the step's buffers stay in the heap: no page faults per step

    @abstractmethod
    def _bind(self, model: nn.Module) -> list[torch.Tensor]:
        """Check that this step computes `model` exactly (ValueError naming it otherwise), keep
        its layers, and return its parameters in the order `clipped_sum` writes them."""

    @abstractmethod
    def clipped_sum(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor | None,
        out: list[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each parameter's sum of clipped per-example gradients (in `params` order, before
        noise; written into `out`'s tensors when given), and each example's loss (its
        cross-entropy times its class weight)."""

    def _claim(self, *, needed: bool) -> torch.Size | None:
        """The next draw's shape, counted against the known steps; None for a draw ahead of
        need when no known step is left to use it."""
        left = self._steps_left
        if left == 0 and not needed:
            return None
        chunk = NOISE_STEPS if left is None else min(NOISE_STEPS, max(1, left))
        if left is not None:
            self._steps_left = max(0, left - chunk)
        return torch.Size([chunk, self._size])

    def _draw(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        std = self.noise_multiplier * self.max_grad_norm
        return self.randomness.gaussian(shape, std=std, like=like)

    def _next_noise(self, like: torch.Tensor) -> torch.Tensor:
        """This step's N(0, (sigma C)^2) vector, from the site's randomness; drawn for several
        steps at once (independent draws either way), each used once and never again."""
        if self._pid != os.getpid():  # forked: the parent keeps these rows; the thread is gone
            self._pid, self._noise, self._used = os.getpid(), torch.empty(0), 0
            self._pending, self._executor = None, None
        if self._used == len(self._noise):
            pending, self._pending = self._pending, None
            if pending is not None:
                self._noise = pending.result()  # a failed draw raises once, never kept
            else:
                shape = self._claim(needed=True)
                assert shape is not None  # a needed draw always has a shape
                self._noise = self._draw(shape, like)
            self._used = 0
            self._prefetch(like)
        self._used += 1
        return self._noise[self._used - 1]

    def _prefetch(self, like: torch.Tensor) -> None:
        if not self._background:
            return
        shape = self._claim(needed=False)
        if shape is None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedsafe-noise")
        self._pending = self._executor.submit(self._draw, shape, like)

    def close(self) -> None:
        """Stop the noise thread (a draw ahead of need is discarded, never used)."""
        self._pending = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def set_gradients(
        self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        """Set every parameter's `.grad` to the noised, scaled clipped sum (Opacus' order:
        (sum + noise) / expected batch size); returns the batch's mean loss (0 for an empty
        batch, whose step is noise only). The gradients are views of one buffer that the next
        call overwrites: an optimiser reads them in its step, as it does Opacus'."""
        try:
            noise = self._next_noise(self._flat)  # first: a failed draw writes no sum
            _, losses = self.clipped_sum(x, y, weight, out=self._views)
            self._flat.add_(noise).div_(self.expected_batch_size)
        except BaseException:
            # the views are `.grad`: never leave a noise-free (or half-written) sum in them
            self._flat.zero_()
            for p in self.params:
                p.grad = None
            raise
        for p, view in zip(self.params, self._views, strict=True):
            if p.grad is not view:
                p.grad = view
        return losses.sum() / max(len(y), 1)


def example_losses(
    logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Each example's own cross-entropy times its class weight: `site_loss` before the mean."""
    losses = nn.functional.cross_entropy(logits, y, reduction="none")
    return losses if weight is None else losses * weight[y]


class FusedLinearDP(FusedDP):
    """The fused step for a Sequential of Linear/ReLU, in closed form without autograd."""

    def _bind(self, model: nn.Module) -> list[torch.Tensor]:
        layers = _layers(model)
        if layers is None:
            raise ValueError(f"the fused DP step needs Linear and ReLU layers only, got {model}")
        self.layers = layers
        self.linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        self._neg: torch.Tensor | None = None
        return [p for lin in self.linears for p in (lin.weight, lin.bias)]

    @torch.no_grad()
    def clipped_sum(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor | None,
        out: list[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each parameter's sum of clipped per-example gradients (before noise), and each
        example's loss (its own cross-entropy times its class weight, as `site_loss`)."""
        inputs: list[torch.Tensor] = []  # each Linear's input, in order
        relu_after: list[bool] = []  # whether a ReLU follows each Linear
        a = x.flatten(1) if self.flattens else x
        if a.dim() != 2:
            raise ValueError(f"the fused Linear step takes one row per example, got {x.shape}")
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                inputs.append(a)
                relu_after.append(False)
                a = torch.addmm(layer.bias, a, layer.weight.T)
            else:  # ReLU, in place on a fresh activation; the next input > 0 is its mask
                relu_after[-1] = True
                a = a.relu_()
        log_probs = torch.log_softmax(a, dim=1)
        losses = nn.functional.nll_loss(log_probs, y, reduction="none")
        d = log_probs.exp_()  # softmax - onehot(y) = d loss_i / d logits_i
        d.scatter_add_(1, y[:, None], self._minus_ones(len(y), d))
        if weight is not None:
            scale = weight[y]
            losses = losses * scale
            d = d * scale[:, None]
        deltas: list[torch.Tensor] = []
        d_sq: list[torch.Tensor] = []
        for i in range(len(self.linears) - 1, -1, -1):
            deltas.append(d)
            d_sq.append(torch.linalg.vecdot(d, d))
            if i:
                d = d @ self.linears[i].weight
                if relu_after[i - 1]:
                    d = torch.ops.aten.threshold_backward(d, inputs[i], 0)
        deltas.reverse()
        d_sq.reverse()
        # |grad_i|^2 = sum over layers of |d_i|^2 (|a_i|^2 + 1): weight and bias together
        a_sq = torch.stack([torch.linalg.vecdot(a_in, a_in) for a_in in inputs], 1)
        norms_sq = torch.linalg.vecdot(torch.stack(d_sq, 1), a_sq.add_(1.0))
        factor = clip_factor(norms_sq.sqrt(), self.max_grad_norm)
        sums = out or [torch.empty_like(p) for p in self.params]
        for k, (a_in, delta) in enumerate(zip(inputs, deltas, strict=True)):
            clipped = delta * factor[:, None]
            torch.mm(clipped.T, a_in, out=sums[2 * k])
            torch.sum(clipped, 0, out=sums[2 * k + 1])
        return sums, losses

    def _minus_ones(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """A cached column of -1s: the one-hot subtraction as one scatter."""
        cached = self._neg
        if cached is None or len(cached) < n or cached.dtype != like.dtype:
            cached = self._neg = torch.full(
                (max(n, 1), 1), -1.0, dtype=like.dtype, device=like.device
            )
        return cached[:n]
