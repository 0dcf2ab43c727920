"""DP-SGD's guarantee as an auditor checks it: one record moves the clipped sum by at most C,
the steps are the steps reserved, empty batches are noise, and the noise is the site's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import fedsafe.common.privacy.dp_sgd as dp_sgd
import fedsafe.common.privacy.fused_dp as fused_dp
from fedsafe.common.models import build_model
from fedsafe.common.privacy.dp_sgd import batches_per_epoch, clipped_gradient_sum, poisson_batches
from fedsafe.common.privacy.randomness import OsRandomness, SeededRandomness
from fedsafe.common.training import DpSettings, train_local

C = 1.0
# A rare outcome weighted up ~19x, as a bank with 5% defaults would weight it.
WEIGHT = torch.tensor([1 / (2 * 0.95), 1 / (2 * 0.05)])


def _batch(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = (rng.random(n) < 0.08).astype(np.int64)
    y[:3] = 1
    return torch.from_numpy(x), torch.from_numpy(y)


def _model() -> nn.Module:
    return build_model("mlp", n_features=12, n_classes=2, hidden=16, seed=0)


def _worst_neighbour_distance(mechanism: str | None = None) -> float:
    """Max over removed records of ||sum(D) - sum(D minus one record)||, clipped, noise-free."""
    x, y = _batch()
    full = clipped_gradient_sum(
        _model(), x, y, max_grad_norm=C, weight=WEIGHT, randomness=OsRandomness(),
        mechanism=mechanism,
    )  # fmt: skip
    worst = 0.0
    for i in range(len(y)):
        keep = torch.arange(len(y)) != i
        part = clipped_gradient_sum(
            _model(), x[keep], y[keep], max_grad_norm=C, weight=WEIGHT,
            randomness=OsRandomness(), mechanism=mechanism,
        )  # fmt: skip
        worst = max(
            worst,
            math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(full, part, strict=True))),
        )
    return worst


@pytest.mark.parametrize("mechanism", [None, dp_sgd.FUSED, dp_sgd.OPACUS])
def test_one_record_moves_the_clipped_weighted_sum_by_at_most_c(mechanism: str | None) -> None:
    assert _worst_neighbour_distance(mechanism) <= C * (1 + 1e-5)


@pytest.mark.parametrize("name", ["mlp", "logreg"])
@pytest.mark.parametrize("clip", [0.01, 1.0, 1e3])
def test_the_fused_clipped_sum_is_opacus_to_float_tolerance(name: str, clip: float) -> None:
    """The training path for Linear/ReLU stacks computes Opacus' noise-free sum, clipping (or
    not) included, class weights included."""
    x, y = _batch(n=80, seed=3)
    x = x * 4
    model = build_model(name, n_features=12, n_classes=2, hidden=16, seed=1)
    got = clipped_gradient_sum(model, x, y, max_grad_norm=clip, weight=WEIGHT,
                               randomness=OsRandomness(), mechanism=dp_sgd.FUSED)  # fmt: skip
    ref = clipped_gradient_sum(model, x, y, max_grad_norm=clip, weight=WEIGHT,
                               randomness=OsRandomness(), mechanism=dp_sgd.OPACUS)  # fmt: skip
    for a, b in zip(got, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, float(b.abs().max())))


def test_each_model_trains_on_the_fastest_exact_mechanism() -> None:
    mlp = build_model("mlp", n_features=12, n_classes=2, seed=0)
    cnn = build_model("cnn", n_features=64, n_classes=10, input_shape=(1, 8, 8), seed=0)
    batch_normed = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    cases = ((mlp, dp_sgd.FUSED), (cnn, dp_sgd.FUSED_LAYERS), (batch_normed, dp_sgd.OPACUS))
    for model, expected in cases:
        assert dp_sgd.mechanism_for(model) == expected
    for model, expected in cases[:2]:
        private = dp_sgd.PrivateGradient(
            model, torch.optim.SGD(model.parameters(), lr=0.1), n_train=100, batch_size=10,
            noise_multiplier=1.0, max_grad_norm=1.0, randomness=OsRandomness(),
        )  # fmt: skip
        assert private.mechanism == expected
        private.close()


def test_the_check_catches_a_batch_normalised_weighted_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch's weighted mean divides by the batch's summed weights: others' gradients move.
    (On Opacus' path, whose loss is `site_loss`; the fused path equals it, tested above.)"""
    monkeypatch.setattr(
        dp_sgd,
        "site_loss",
        lambda logits, y, weight: nn.functional.cross_entropy(logits, y, weight=weight),
    )
    assert _worst_neighbour_distance(dp_sgd.OPACUS) > 1.5 * C


def test_the_check_catches_a_fused_step_that_forgets_to_clip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fused_dp, "clip_factor", lambda norms, c: torch.ones_like(norms))
    assert _worst_neighbour_distance(dp_sgd.FUSED) > 1.5 * C


@pytest.mark.parametrize("n", [1, 7, 31, 32, 33, 97, 199, 243, 300, 1000])
@pytest.mark.parametrize("batch_size", [1, 8, 32, 49, 64, 100])
def test_an_epoch_is_exactly_the_reserved_steps(n: int, batch_size: int) -> None:
    """Opacus' loader drops a step for about 6% of sizes (float 1/(1/k)); the site never does."""
    batches = poisson_batches(n, batch_size, SeededRandomness(1))
    assert len(batches) == batches_per_epoch(n, batch_size) == math.ceil(n / batch_size)


def test_empty_poisson_batches_are_noise_only_steps() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    y = np.array([0, 1, 0])
    model = build_model("logreg", n_features=5, n_classes=2, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    result = train_local(
        model,
        x,
        y,
        epochs=20,
        batch_size=1,
        learning_rate=0.1,
        device=torch.device("cpu"),
        dp=DpSettings(1.0, C),
        randomness=SeededRandomness(3),
    )  # rate 1/3: about (2/3)^3 of the 60 batches are empty
    assert result.steps == 60
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_site_noise_has_the_asked_standard_deviation() -> None:
    like = torch.zeros(1)
    draws = OsRandomness().gaussian(torch.Size([200_000]), std=2.5, like=like).numpy()
    assert abs(draws.mean()) < 0.03 and abs(draws.std() - 2.5) < 0.03
    assert draws.dtype == np.float32


def test_poisson_sampling_includes_each_record_at_the_rate() -> None:
    mask = OsRandomness().poisson_mask(400_000, 0.1)
    assert abs(mask.mean() - 0.1) < 0.003


def test_an_empty_batch_step_is_pure_gaussian_noise_of_std_sigma_c_over_b() -> None:
    """Through the optimiser itself: no records, so p.grad is the noise alone, scaled by 1/B."""
    from fedsafe.common.privacy.dp_sgd import private_parts, site_loss

    model = nn.Linear(400, 50)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    module, dp_optimizer, _ = private_parts(
        model,
        optimizer,
        n_train=320,
        batch_size=32,
        noise_multiplier=2.0,
        max_grad_norm=0.5,
        randomness=OsRandomness(),
    )
    site_loss(module(torch.zeros(0, 400)), torch.zeros(0, dtype=torch.long), None).backward()
    assert dp_optimizer.pre_step()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    expected_batch = 32  # 320 rows at rate 1/10
    assert grads.abs().max() > 0
    assert abs(float(grads.std()) - 2.0 * 0.5 / expected_batch) < 0.002
    assert abs(float(grads.mean())) < 0.001


def test_an_empty_fused_step_is_pure_gaussian_noise_of_std_sigma_c_over_b() -> None:
    model = build_model("logreg", n_features=400, n_classes=50, seed=0)
    private = dp_sgd.PrivateGradient(
        model, torch.optim.SGD(model.parameters(), lr=0.0), n_train=320, batch_size=32,
        noise_multiplier=2.0, max_grad_norm=0.5, randomness=OsRandomness(),
    )  # fmt: skip
    assert private.mechanism == dp_sgd.FUSED
    loss = private.set_gradients(torch.zeros(0, 400), torch.zeros(0, dtype=torch.long), None)
    assert float(loss) == 0.0
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert abs(float(grads.std()) - 2.0 * 0.5 / 32) < 0.002
    assert abs(float(grads.mean())) < 0.001
    # the next step's noise is a fresh draw, never the same vector again
    private.set_gradients(torch.zeros(0, 400), torch.zeros(0, dtype=torch.long), None)
    again = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert not torch.equal(grads, again)


def test_a_reused_relu_runs_at_every_place_and_shared_or_frozen_linears_go_to_opacus() -> None:
    act = nn.ReLU()
    reused = nn.Sequential(nn.Linear(12, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 2))
    x, y = _batch(n=40, seed=5)
    got = clipped_gradient_sum(reused, x, y, max_grad_norm=0.5, weight=WEIGHT,
                               randomness=OsRandomness(), mechanism=dp_sgd.FUSED)  # fmt: skip
    ref = clipped_gradient_sum(reused, x, y, max_grad_norm=0.5, weight=WEIGHT,
                               randomness=OsRandomness(), mechanism=dp_sgd.OPACUS)  # fmt: skip
    for a, b in zip(got, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    lin = nn.Linear(8, 8)
    shared = nn.Sequential(nn.Linear(12, 8), lin, nn.ReLU(), lin, nn.Linear(8, 2))
    frozen = _model()
    frozen[0].weight.requires_grad_(False)
    for model in (shared, frozen):
        assert dp_sgd.mechanism_for(model) == dp_sgd.OPACUS
