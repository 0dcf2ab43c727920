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
with a handful of tensor calls (`make bench`, dp_step). Other models use Opacus.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsafe.common.privacy.randomness import Randomness

__all__ = ["FusedLinearDP", "supports_fused"]

_CLIP_EPS = 1e-6  # Opacus' own: clip factor C / (norm + 1e-6)
_NOISE_STEPS = 32  # steps of noise drawn from the OS at once: one call, not one per step


def _layers(model: nn.Module) -> list[nn.Module] | None:
    """The model's layers in order when it is a Sequential of Linear and ReLU ending in Linear."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model.children())
    if not layers or not isinstance(layers[-1], nn.Linear):
        return None
    for layer in layers:
        if isinstance(layer, nn.Linear):
            if layer.bias is None:
                return None
        elif not isinstance(layer, nn.ReLU):
            return None
    return layers


def clip_factor(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Opacus' per-example factor: min(1, C / (norm + 1e-6))."""
    return (max_grad_norm / (norms + _CLIP_EPS)).clamp(max=1.0)


def supports_fused(model: nn.Module) -> bool:
    """Whether `model` is a stack this path computes exactly (logreg, the MLP)."""
    return _layers(model) is not None


class FusedLinearDP:
    """One DP-SGD gradient per call for a Sequential of Linear/ReLU: `p.grad` is set to
    (sum of clipped per-example gradients + N(0, (sigma C)^2)) / expected batch size."""

    def __init__(
        self,
        model: nn.Module,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        randomness: Randomness,
        steps: int | None = None,
    ) -> None:
        layers = _layers(model)
        if layers is None:
            raise ValueError(f"the fused DP step needs Linear and ReLU layers only, got {model}")
        if noise_multiplier < 0 or max_grad_norm <= 0 or expected_batch_size < 1:
            raise ValueError(
                f"need noise >= 0, C > 0, expected batch >= 1; got {noise_multiplier}, "
                f"{max_grad_norm}, {expected_batch_size}"
            )
        self.layers = layers
        self.linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        self.params = [p for lin in self.linears for p in (lin.weight, lin.bias)]
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.expected_batch_size = expected_batch_size
        self.randomness = randomness
        self._size = sum(p.numel() for p in self.params)
        self._noise = torch.empty(0)
        self._used = 0
        self._steps_left = steps  # known: draw no noise that no step will use

    def _next_noise(self, like: torch.Tensor) -> torch.Tensor:
        """This step's N(0, (sigma C)^2) vector, from the site's randomness; drawn for several
        steps at once (independent draws either way), each used once and never again."""
        if self._used == len(self._noise):
            std = self.noise_multiplier * self.max_grad_norm
            chunk = _NOISE_STEPS if self._steps_left is None else max(1, self._steps_left)
            chunk = min(chunk, _NOISE_STEPS)
            if self._steps_left is not None:
                self._steps_left = max(0, self._steps_left - chunk)
            shape = torch.Size([chunk, self._size])
            self._noise = self.randomness.gaussian(shape, std=std, like=like)
            self._used = 0
        self._used += 1
        return self._noise[self._used - 1]

    @torch.no_grad()
    def clipped_sum(
        self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each parameter's sum of clipped per-example gradients (before noise), and each
        example's loss (its own cross-entropy times its class weight, as `site_loss`)."""
        inputs: list[torch.Tensor] = []  # each Linear's input, in order
        masks: list[torch.Tensor | None] = []  # the ReLU after each Linear, if any
        a = x.flatten(1)
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                inputs.append(a)
                masks.append(None)
                a = torch.addmm(layer.bias, a, layer.weight.T)
            else:
                masks[-1] = a > 0
                a = a.clamp_min(0)
        log_probs = torch.log_softmax(a, dim=1)
        losses = -log_probs.gather(1, y[:, None]).squeeze(1)
        d = log_probs.exp()
        d[torch.arange(len(y), device=d.device), y] -= 1.0  # d loss_i / d logits_i
        if weight is not None:
            scale = weight[y]
            losses = losses * scale
            d = d * scale[:, None]
        deltas: list[torch.Tensor] = []
        norms_sq = torch.zeros(len(y), dtype=a.dtype, device=a.device)
        for i in range(len(self.linears) - 1, -1, -1):
            deltas.append(d)
            d_sq = d.square().sum(1)
            norms_sq += d_sq * (inputs[i].square().sum(1) + 1.0)
            if i:
                d = d @ self.linears[i].weight
                mask = masks[i - 1]
                if mask is not None:
                    d = d * mask
        deltas.reverse()
        factor = clip_factor(norms_sq.sqrt(), self.max_grad_norm)
        sums: list[torch.Tensor] = []
        for a_in, delta in zip(inputs, deltas, strict=True):
            clipped = delta * factor[:, None]
            sums.append(clipped.T @ a_in)
            sums.append(clipped.sum(0))
        return sums, losses

    def set_gradients(
        self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        """Set every parameter's `.grad` to the noised, scaled clipped sum; returns the batch's
        mean loss (0 for an empty batch, whose step is noise only)."""
        sums, losses = self.clipped_sum(x, y, weight)
        sizes = [s.numel() for s in sums]
        for p, total, n in zip(
            self.params, sums, self._next_noise(sums[0]).split(sizes), strict=True
        ):
            p.grad = (total + n.view_as(total)) / self.expected_batch_size
        return losses.sum() / max(len(y), 1)
