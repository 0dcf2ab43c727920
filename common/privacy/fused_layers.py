"""DP-SGD's clipped gradient sum for Sequential conv nets, from one forward and one backward.

Opacus computes per-example gradients with a hook on every layer and a second pass in its
optimiser (clip, accumulate, noise). For the small conv nets a site trains (the CNN on digits
or Fashion-MNIST, ScatterNet+linear) that Python machinery costs more than the arithmetic. Here
the forward pass keeps each parameterised layer's input and output, one `autograd.grad` call
returns every layer's output gradient (parameter gradients are never formed), and each
example's gradient comes in closed form per layer:

- Linear: the outer product d_i a_i^T (bias d_i); its norm is |d_i| |a_i| without forming it;
- Conv2d: G_i U_i^T, with U_i the input's patches read through a strided view of the padded
  input (bias: G_i summed over positions); a few thousand numbers per example for these nets;
- GroupNorm: (x_hat_i * d_i) and d_i summed over positions, x_hat the normalised input.

The mechanism is Opacus' exactly (tested against it on noise-free steps): flat clipping of each
example's whole gradient to C with factor min(1, C / (norm + 1e-6)), Gaussian noise std sigma*C
from the site's `Randomness`, division by the expected batch size. A model with any other
parameterised layer, or a layer that mixes examples (BatchNorm), trains on Opacus' hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from fedsafe.common.privacy.fused_dp import FusedDP, clip_factor, example_losses, plain_layers

__all__ = ["FusedLayersDP", "supports_layers"]

# Layers without parameters that treat every example on its own (no batch statistics).
_PER_EXAMPLE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
)


def _supported(layer: nn.Module) -> bool:
    """Exact types only: a subclass may change `forward` (and a parametrized layer is one)."""
    kind = type(layer)
    if kind is nn.Linear:
        return True
    if kind is nn.Conv2d:
        assert isinstance(layer, nn.Conv2d)
        return (
            layer.groups == 1
            and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str)
        )
    if kind is nn.GroupNorm:
        return True  # statistics per example and group, affine or not
    # in place, it would rewrite the output whose gradient the step asks autograd for
    in_place = bool(getattr(layer, "inplace", False))
    free = next(layer.parameters(), None) is None
    return kind in _PER_EXAMPLE and not in_place and free


def supports_layers(model: nn.Module) -> bool:
    """Whether `model` is a plain Sequential whose every layer this path computes exactly (a
    layer with parameters used twice, or a parameter tied between two, is Opacus')."""
    layers = plain_layers(model)
    if layers is None:
        return False
    owners = [layer for layer in layers if _has_params(layer)]
    return len({id(layer) for layer in owners}) == len(owners) and all(
        _supported(layer) for layer in layers
    )


def _has_params(layer: nn.Module) -> bool:
    return any(p.requires_grad for p in layer.parameters(recurse=False))


class _Grads:
    """One parameter's per-example gradients, one row per example (in any order of the
    parameter's entries: `to_param` puts their clip-weighted sum back in the parameter's shape)."""

    def __init__(
        self,
        rows: torch.Tensor,
        to_param: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.rows = rows.flatten(1)  # (B, entries)
        self.to_param = to_param

    def norms(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.rows, dim=1)

    def weighted_sum(self, factor: torch.Tensor, out: torch.Tensor) -> None:
        if self.to_param is None:
            torch.mv(self.rows.T, factor, out=out.view(-1))
        else:
            out.copy_(self.to_param(factor @ self.rows))


class _OuterGrads(_Grads):
    """A Linear weight's per-example gradients d_i a_i^T, never formed: the norm of an outer
    product is |d_i| |a_i| and the weighted sum is one matrix product (the "ghost norm")."""

    def __init__(self, d: torch.Tensor, a: torch.Tensor) -> None:
        self.d, self.a = d, a

    def norms(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.d, dim=1) * torch.linalg.vector_norm(self.a, dim=1)

    def weighted_sum(self, factor: torch.Tensor, out: torch.Tensor) -> None:
        torch.mm((self.d * factor[:, None]).T, self.a, out=out)


def _conv_weight_grads(layer: nn.Conv2d, a: torch.Tensor, d: torch.Tensor) -> _Grads:
    """Per-example conv weight gradients G_i U_i^T, with the patches U read through a strided
    view of the padded input (one plain copy; `F.unfold` loops over the batch in Python-sized
    steps and was most of the step). One input channel: patches (B, k*k, positions), the
    gradient (B, k*k, out); several: channels-last patches (B, positions, k*k*C), so the copy
    runs along contiguous channels, and the gradient (B, out, k*k*C)."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    if isinstance(layer.padding, str):  # pragma: no cover - `supports_layers` refuses it
        raise ValueError(f"padding {layer.padding!r}: the fused step needs it in pixels")
    ph, pw = layer.padding
    batch, channels = a.shape[0], a.shape[1]
    out_h, out_w = d.shape[2], d.shape[3]
    g = d.flatten(2)  # (B, out, positions)
    shape = layer.weight.shape
    if channels == 1:
        padded = F.pad(a, (pw, pw, ph, ph)).contiguous()  # as_strided reads the memory
        hp, wp = padded.shape[2], padded.shape[3]
        patches = padded.as_strided(
            (batch, kh, kw, out_h, out_w), (hp * wp, dh * wp, dw, sh * wp, sw)
        ).reshape(batch, kh * kw, out_h * out_w)
        rows = torch.bmm(patches, g.transpose(1, 2))
        return _Grads(rows, lambda t: t.view(-1, shape[0]).T.reshape(shape))
    padded = F.pad(a.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph)).contiguous()  # (B, H', W', C)
    hp, wp = padded.shape[1], padded.shape[2]
    row, col = wp * channels, channels
    patches = padded.as_strided(
        (batch, out_h, out_w, kh, kw, channels),
        (hp * row, sh * row, sw * col, dh * row, dw * col, 1),
    ).reshape(batch, out_h * out_w, kh * kw * channels)
    return _Grads(
        torch.bmm(g, patches),
        lambda t: t.view(shape[0], kh, kw, channels).permute(0, 3, 1, 2),
    )


def _forward(layer: nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output, and what its per-example gradients need: its input, or for
    GroupNorm the normalised input x_hat, kept from the forward pass (the affine part applied
    here) rather than computed twice."""
    if isinstance(layer, nn.GroupNorm):
        x_hat = F.group_norm(a, layer.num_groups, eps=layer.eps)
        shape = (1, -1) + (1,) * (a.dim() - 2)
        if layer.weight is not None and layer.bias is not None:
            out = torch.addcmul(layer.bias.view(shape), x_hat, layer.weight.view(shape))
        else:
            out = x_hat if layer.weight is None else x_hat * layer.weight.view(shape)
            out = out if layer.bias is None else out + layer.bias.view(shape)
        return out, x_hat.detach()
    return layer(a), a.detach()


def _per_example(layer: nn.Module, a: torch.Tensor, d: torch.Tensor) -> list[_Grads]:
    """The per-example gradients of each of `layer`'s parameters (in `parameters()` order),
    given what `_forward` kept (`a`) and the gradient `d` of the summed loss at its output."""
    out: list[_Grads] = []
    if isinstance(layer, nn.Linear):
        if d.dim() == 2:
            out.append(_OuterGrads(d, a))
        else:  # (B, ..., features): each example's gradient sums over the middle positions
            out.append(_Grads(torch.einsum("b...o,b...i->boi", d, a)))
        if layer.bias is not None:
            out.append(_Grads(d if d.dim() == 2 else d.flatten(1, -2).sum(1)))
    elif isinstance(layer, nn.Conv2d):
        out.append(_conv_weight_grads(layer, a, d))
        if layer.bias is not None:
            out.append(_Grads(d.flatten(2).sum(2)))
    elif isinstance(layer, nn.GroupNorm):  # `a` is the normalised input x_hat (`_forward`)
        batch, channels = a.shape[0], a.shape[1]  # (B, C) inputs have one position each
        x_hat, g = a.reshape(batch, channels, -1), d.reshape(batch, channels, -1)
        if layer.weight is not None:
            out.append(_Grads(torch.linalg.vecdot(x_hat, g)))
        if layer.bias is not None:
            out.append(_Grads(g.sum(2)))
    else:  # pragma: no cover - `supports_layers` admits no other parameterised layer
        raise ValueError(f"no per-example gradient for {layer}")
    return out


class FusedLayersDP(FusedDP):
    """The fused step for a Sequential of Conv2d, GroupNorm, Linear and per-example layers."""

    def _bind(self, model: nn.Module) -> list[torch.Tensor]:
        if not isinstance(model, nn.Sequential) or not supports_layers(model):
            raise ValueError(f"the fused DP step does not compute this model exactly: {model}")
        self.model = model
        self.layers = list(model)
        self._owns = [_has_params(layer) for layer in self.layers]
        return [p for layer in self.layers for p in layer.parameters(recurse=False)]

    def clipped_sum(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor | None,
        out: list[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each parameter's sum of clipped per-example gradients (before noise), and each
        example's loss (its own cross-entropy times its class weight, as `site_loss`)."""
        sums = out or [torch.empty_like(p) for p in self.params]
        if len(y) == 0:  # a noise-only step: no example, nothing to clip
            for total in sums:
                total.zero_()
            return sums, torch.zeros(0, dtype=x.dtype, device=x.device)
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        owners: list[nn.Module] = []
        with torch.enable_grad():
            a = x.flatten(1) if self.flattens else x
            for layer, owns in zip(self.layers, self._owns, strict=True):
                if owns:
                    a, kept = _forward(layer, a)
                    inputs.append(kept)
                    outputs.append(a)
                    owners.append(layer)
                else:
                    a = layer(a)
            losses = example_losses(a, y, weight)
            # each example's loss depends on its own row only, so the summed loss's gradient
            # with respect to a layer's output is, row by row, each example's own gradient
            grads = torch.autograd.grad(losses.sum(), outputs)
        per_param: list[_Grads] = []
        for layer, a_in, d in zip(owners, inputs, grads, strict=True):
            per_param.extend(_per_example(layer, a_in, d))
        # as Opacus: each parameter's per-example norm, then the norm of those norms
        norms = torch.linalg.vector_norm(torch.stack([g.norms() for g in per_param], 1), dim=1)
        factor = clip_factor(norms, self.max_grad_norm)
        for g, total in zip(per_param, sums, strict=True):
            g.weighted_sum(factor, total)
        return sums, losses.detach()
