"""The fused conv-net step as an auditor checks it: Opacus' clipped sum to float tolerance,
one record moves it by at most C, an unclipped variant is caught, an empty batch is pure noise,
and every model it cannot compute exactly goes to Opacus."""

from __future__ import annotations

import math
import os
import threading

import pytest
import torch
from torch import nn

import fedsafe.common.privacy.fused_dp as fused_dp
import fedsafe.common.privacy.fused_layers as fused_layers
from fedsafe.common.models import build_model
from fedsafe.common.privacy import dp_sgd
from fedsafe.common.privacy.dp_sgd import clipped_gradient_sum
from fedsafe.common.privacy.fused_layers import FusedLayersDP, supports_layers
from fedsafe.common.privacy.randomness import OsRandomness

C = 1.0


def _cnn(shape: tuple[int, int, int], seed: int = 0) -> nn.Module:
    return build_model(
        "cnn", n_features=math.prod(shape), n_classes=10, input_shape=shape, seed=seed
    )


def _odd_convs() -> nn.Module:
    """Strides, dilation, asymmetric kernels and padding, a conv without bias, 1 and 2 input
    channels: the strided patch view must read the same windows as the convolution."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, (2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1)),
        nn.ReLU(),
        nn.Conv2d(4, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
        nn.GroupNorm(1, 5),
        nn.Tanh(),
        nn.Conv2d(5, 4, 3, stride=2, padding=2, bias=False),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def _sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float, mechanism: str,
          weight: torch.Tensor | None = None) -> list[torch.Tensor]:  # fmt: skip
    return clipped_gradient_sum(
        model, x, y, max_grad_norm=clip, weight=weight, randomness=OsRandomness(),
        mechanism=mechanism,
    )  # fmt: skip


CASES = [
    ("cnn 8x8", lambda: _cnn((1, 8, 8)), (1, 8, 8), 10),
    ("cnn 28x28", lambda: _cnn((1, 28, 28)), (1, 28, 28), 10),
    ("cnn 3x9x7", lambda: _cnn((3, 9, 7)), (3, 9, 7), 10),
    ("odd convs", _odd_convs, (1, 13, 11), 3),
    (
        "scatter_linear",
        lambda: build_model(
            "scatter_linear", n_features=96, n_classes=10, input_shape=(6, 4, 4), seed=0
        ),
        (6, 4, 4),
        10,
    ),
]


@pytest.mark.parametrize("clip", [0.01, 1.0, 1e3])
@pytest.mark.parametrize(("name", "make", "shape", "classes"), CASES, ids=[c[0] for c in CASES])
def test_the_fused_conv_sum_is_opacus_to_float_tolerance(
    name: str, make: object, shape: tuple[int, ...], classes: int, clip: float
) -> None:
    """Clipping on (0.01), mixed (1) and off (1e3), with class weights: the noise-free sum the
    site trains on is Opacus' own."""
    model = make()  # type: ignore[operator]
    assert dp_sgd.mechanism_for(model) == dp_sgd.FUSED_LAYERS
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, *shape, generator=g) * 3
    y = torch.randint(0, classes, (24,), generator=g)
    weight = torch.rand(classes, generator=g) + 0.5
    got = _sums(model, x, y, clip, dp_sgd.FUSED_LAYERS, weight)
    ref = _sums(model, x, y, clip, dp_sgd.OPACUS, weight)
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * max(1e-3, float(b.abs().max())))


def _worst_neighbour_distance(model: nn.Module) -> float:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 1, 8, 8, generator=g) * 4
    y = torch.randint(0, 10, (32,), generator=g)
    full = _sums(model, x, y, C, dp_sgd.FUSED_LAYERS)
    worst = 0.0
    for i in range(len(y)):
        keep = torch.arange(len(y)) != i
        part = _sums(model, x[keep], y[keep], C, dp_sgd.FUSED_LAYERS)
        gap = sum(float(((a - b) ** 2).sum()) for a, b in zip(full, part, strict=True))
        worst = max(worst, math.sqrt(gap))
    return worst


def test_one_record_moves_the_fused_conv_sum_by_at_most_c() -> None:
    assert _worst_neighbour_distance(_cnn((1, 8, 8))) <= C * (1 + 1e-5)


def test_the_check_catches_a_fused_conv_step_that_forgets_to_clip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fused_layers, "clip_factor", lambda norms, c: torch.ones_like(norms))
    assert _worst_neighbour_distance(_cnn((1, 8, 8))) > 1.5 * C


def test_an_empty_fused_conv_step_is_pure_gaussian_noise_of_std_sigma_c_over_b() -> None:
    model = _cnn((1, 8, 8))
    private = dp_sgd.PrivateGradient(
        model, torch.optim.SGD(model.parameters(), lr=0.0), n_train=320, batch_size=32,
        noise_multiplier=2.0, max_grad_norm=0.5, randomness=OsRandomness(),
    )  # fmt: skip
    assert private.mechanism == dp_sgd.FUSED_LAYERS
    empty = torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    assert float(private.set_gradients(*empty, None)) == 0.0
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert abs(float(grads.std()) - 2.0 * 0.5 / 32) < 0.002
    assert abs(float(grads.mean())) < 0.001
    private.set_gradients(*empty, None)
    again = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert not torch.equal(grads, again)  # a fresh draw each step, never the same vector


def test_the_step_sets_the_scaled_sum_and_survives_a_cleared_gradient() -> None:
    """Noise off: every `.grad` is the clipped sum over the expected batch size, also after the
    training loop sets the gradients to None between steps."""
    model = _cnn((1, 8, 8))
    x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))
    step = FusedLayersDP(
        model, noise_multiplier=0.0, max_grad_norm=0.3, expected_batch_size=16,
        randomness=OsRandomness(),
    )  # fmt: skip
    expected = [s / 16 for s in _sums(model, x, y, 0.3, dp_sgd.FUSED_LAYERS)]
    for _ in range(2):
        step.set_gradients(x, y, None)
        for p, want in zip(model.parameters(), expected, strict=True):
            assert torch.allclose(p.grad, want, rtol=1e-6, atol=1e-9)
        model.zero_grad(set_to_none=True)


def test_a_shared_parameter_free_layer_is_applied_at_every_place() -> None:
    """`children()` lists a repeated module once; the step runs the Sequential as written."""
    act = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(1, 3, 3), act, nn.Conv2d(3, 2, 3), act, nn.Flatten(),
                          nn.Linear(8, 2))  # fmt: skip
    x, y = torch.randn(12, 1, 6, 6), torch.randint(0, 2, (12,))
    assert supports_layers(model)
    got = _sums(model, x, y, 1e3, dp_sgd.FUSED_LAYERS)
    ref = _sums(model, x, y, 1e3, dp_sgd.OPACUS)
    for a, b in zip(got, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2)),
        nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(64, 2)),
        nn.Sequential(nn.Conv2d(1, 4, 3, padding="same"), nn.Flatten(), nn.Linear(144, 2)),
        nn.Sequential(nn.Conv2d(1, 4, 3, padding_mode="reflect"), nn.Flatten(), nn.Linear(64, 2)),
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(64, 2)),
        nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(24, 2)),
        nn.Sequential(),
    ],
    ids=["batchnorm", "grouped", "same-padding", "reflect", "inplace", "conv1d", "empty"],
)
def test_models_the_fused_conv_step_cannot_compute_exactly_train_on_opacus(
    model: nn.Module,
) -> None:
    assert not supports_layers(model)
    assert dp_sgd.mechanism_for(model) == dp_sgd.OPACUS
    with pytest.raises(ValueError, match="does not compute this model exactly"):
        FusedLayersDP(model, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=8,
                      randomness=OsRandomness())  # fmt: skip


def test_shared_or_frozen_parameters_go_to_opacus() -> None:
    conv = nn.Conv2d(1, 1, 3, padding=1)
    shared = nn.Sequential(conv, nn.ReLU(), conv, nn.Flatten(), nn.Linear(16, 2))
    frozen = _cnn((1, 8, 8))
    next(frozen.parameters()).requires_grad_(False)
    for model in (shared, frozen):
        assert not supports_layers(model)
        assert dp_sgd.mechanism_for(model) == dp_sgd.OPACUS


class _CountingOsRandomness(OsRandomness):
    """OS randomness that counts the noise rows it is asked for, and from which threads."""

    def __init__(self) -> None:
        self.rows = 0
        self.threads: set[str] = set()

    def gaussian(self, shape: torch.Size, *, std: float, like: torch.Tensor) -> torch.Tensor:
        self.rows += shape[0]
        self.threads.add(threading.current_thread().name)
        return super().gaussian(shape, std=std, like=like)


@pytest.mark.parametrize("steps", [1, 31, 32, 33, 70])
def test_noise_drawn_ahead_is_exactly_the_steps_and_the_thread_stops(steps: int) -> None:
    """Drawn on a second thread while steps train, the noise still comes to one row per step:
    none left over for a step that never happens, none used twice."""
    model = _cnn((1, 8, 8))
    rnd = _CountingOsRandomness()
    before = set(threading.enumerate())
    private = dp_sgd.PrivateGradient(
        model, torch.optim.SGD(model.parameters(), lr=0.0), n_train=64, batch_size=8,
        noise_multiplier=1.0, max_grad_norm=1.0, randomness=rnd, steps=steps,
    )  # fmt: skip
    empty = torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    seen = []
    for _ in range(steps):
        private.set_gradients(*empty, None)
        seen.append(torch.cat([p.grad.flatten() for p in model.parameters()]).clone())
    ours = [t for t in set(threading.enumerate()) - before if t.name.startswith("fedsafe-noise")]
    private.close()
    assert rnd.rows == steps
    assert len({tuple(v[:4].tolist()) for v in seen}) == steps  # every step its own row
    if steps > 32:
        assert any(name.startswith("fedsafe-noise") for name in rnd.threads)
    assert not any(t.is_alive() for t in ours)


class _FailingOnce(OsRandomness):
    """OS randomness whose second draw fails, as a getrandom error or MemoryError would."""

    def __init__(self) -> None:
        self.calls = 0

    def gaussian(self, shape: torch.Size, *, std: float, like: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise OSError("getrandom failed")
        return super().gaussian(shape, std=std, like=like)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_failed_noise_draw_leaves_no_gradient_and_the_next_step_draws_afresh(name: str) -> None:
    """The coordinator never gets a noise-free sum because the OS failed once: the step raises,
    every `.grad` is None (an optimiser step moves nothing), and the next step works."""
    if name == "mlp":
        model = build_model("mlp", n_features=12, n_classes=2, hidden=8, seed=0)
        x, y = torch.randn(8, 12), torch.randint(0, 2, (8,))
    else:
        model, x, y = _cnn((1, 8, 8)), torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    private = dp_sgd.PrivateGradient(
        model, torch.optim.SGD(model.parameters(), lr=0.1), n_train=64, batch_size=8,
        noise_multiplier=1.0, max_grad_norm=1.0, randomness=_FailingOnce(),
    )  # fmt: skip
    failed = 0
    for _ in range(fused_dp.NOISE_STEPS + 3):
        try:
            private.set_gradients(x, y, None)
        except OSError:
            failed += 1
            assert all(p.grad is None for p in model.parameters())
    assert failed == 1  # raised once, never kept for the steps after
    private.close()


def test_a_forked_child_never_uses_the_rows_its_parent_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After fork() the parent keeps its drawn rows; the child (seen as a new pid) draws its
    own. (torch itself may hang in a child forked after its thread pool started: fedsafe's
    worker forks before it trains.)"""
    model = build_model("mlp", n_features=12, n_classes=2, hidden=8, seed=0)
    rnd = _CountingOsRandomness()
    private = dp_sgd.PrivateGradient(
        model, torch.optim.SGD(model.parameters(), lr=0.0), n_train=64, batch_size=8,
        noise_multiplier=1.0, max_grad_norm=1.0, randomness=rnd, prefetch_noise=False,
    )  # fmt: skip
    empty = torch.zeros(0, 12), torch.zeros(0, dtype=torch.long)
    private.set_gradients(*empty, None)
    assert rnd.rows == fused_dp.NOISE_STEPS
    parent = os.getpid()
    monkeypatch.setattr(fused_dp.os, "getpid", lambda: parent + 1)
    private.set_gradients(*empty, None)
    assert rnd.rows == 2 * fused_dp.NOISE_STEPS  # a fresh chunk, not row 2 of the parent's
    private.close()


def _tied_mlp() -> nn.Module:
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    model[2].weight = model[0].weight  # two modules, one parameter
    return model


def _hooked() -> nn.Module:
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].register_forward_hook(lambda module, args, out: out * 2)
    return model


class _ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3 * super().forward(x)


@pytest.mark.parametrize(
    "make",
    [
        _tied_mlp,
        _hooked,
        lambda: nn.Sequential(_ScaledLinear(6, 4), nn.ReLU(), nn.Linear(4, 2)),
        lambda: nn.Sequential(
            nn.utils.parametrizations.weight_norm(nn.Linear(6, 4)), nn.ReLU(), nn.Linear(4, 2)
        ),
        lambda: nn.Sequential(
            nn.utils.parametrizations.weight_norm(nn.Conv2d(1, 2, 3)),
            nn.Flatten(),
            nn.Linear(8, 2),
        ),
    ],
    ids=["tied-weights", "forward-hook", "linear-subclass", "weight-norm", "weight-norm-conv"],
)
def test_layers_whose_forward_or_parameters_are_not_their_own_go_to_opacus(make: object) -> None:
    model = make()  # type: ignore[operator]
    assert dp_sgd.mechanism_for(model) == dp_sgd.OPACUS


def test_groupnorm_on_rows_and_a_channels_last_batch_match_opacus() -> None:
    rows = nn.Sequential(nn.Linear(6, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    cnn = _cnn((1, 8, 8))
    xc = torch.randn(16, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    yc = torch.randint(0, 10, (16,))
    for model, inputs, labels in ((rows, x, y), (cnn, xc, yc)):
        assert dp_sgd.mechanism_for(model) == dp_sgd.FUSED_LAYERS
        got = _sums(model, inputs, labels, 0.5, dp_sgd.FUSED_LAYERS)
        ref = _sums(model, inputs, labels, 0.5, dp_sgd.OPACUS)
        for a, b in zip(got, ref, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
