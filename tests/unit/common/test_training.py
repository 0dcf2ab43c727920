"""The local loop: Opacus DP-SGD takes the steps the accountant will be told about."""

from __future__ import annotations

import math

import numpy as np
import torch

from fedsafe.common.models import build_model
from fedsafe.common.privacy.randomness import OsRandomness, SeededRandomness
from fedsafe.common.training import DpSettings, dp_sample_rate, evaluate, train_local


def _data(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x, y


def test_dp_training_reports_real_steps_and_poisson_rate() -> None:
    x, y = _data(100)
    model = build_model("mlp", n_features=5, n_classes=2, hidden=8)
    result = train_local(
        model,
        x,
        y,
        epochs=2,
        batch_size=32,
        learning_rate=0.1,
        device=torch.device("cpu"),
        dp=DpSettings(1.0, 1.0),
        randomness=OsRandomness(),
    )
    assert result.steps == 2 * math.ceil(100 / 32)
    assert result.sample_rate == dp_sample_rate(100, 32) == 0.25
    assert result.num_examples == 100


def test_training_without_dp_reduces_the_loss() -> None:
    x, y = _data(200)
    model = build_model("logreg", n_features=5, n_classes=2)
    before = evaluate(model, x, y, device=torch.device("cpu")).loss
    train_local(
        model, x, y, epochs=5, batch_size=32, learning_rate=0.5, device=torch.device("cpu"), dp=None
    )
    assert evaluate(model, x, y, device=torch.device("cpu")).loss < before


def _dp_state(randomness: object, *, seed: int = 7) -> dict[str, torch.Tensor]:
    x, y = _data(64)
    model = build_model("mlp", n_features=5, n_classes=2, hidden=8, seed=3)
    train_local(
        model,
        x,
        y,
        epochs=1,
        batch_size=16,
        learning_rate=0.1,
        device=torch.device("cpu"),
        dp=DpSettings(1.0, 1.0),
        randomness=randomness,  # type: ignore[arg-type]
        seed=seed,
    )
    return model.state_dict()


def test_dp_noise_ignores_the_run_seed_and_differs_every_time() -> None:
    """The coordinator's seed (the same in both runs) does not make the release predictable."""
    first, second = _dp_state(OsRandomness()), _dp_state(OsRandomness())
    assert not any(torch.equal(first[k], second[k]) for k in first)


def test_the_test_only_seeded_source_is_reproducible() -> None:
    first, second = _dp_state(SeededRandomness(5)), _dp_state(SeededRandomness(5))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_proximal_step_pulls_towards_the_global_weights() -> None:
    x, y = _data(64)
    free = build_model("logreg", n_features=5, n_classes=2, seed=1)
    held = build_model("logreg", n_features=5, n_classes=2, seed=1)
    start = [p.detach().clone() for p in free.parameters()]
    kwargs = dict(
        epochs=3, batch_size=16, learning_rate=0.5, device=torch.device("cpu"), dp=None, seed=0
    )
    train_local(free, x, y, proximal_mu=0.0, **kwargs)  # type: ignore[arg-type]
    train_local(held, x, y, proximal_mu=1.0, **kwargs)  # type: ignore[arg-type]

    def dist(model: torch.nn.Module) -> float:
        return sum(float((p - s).norm()) for p, s in zip(model.parameters(), start, strict=True))

    assert dist(held) < dist(free)


def test_auroc_is_nan_when_the_held_out_split_has_one_class() -> None:
    x, _ = _data(10)
    result = evaluate(
        build_model("logreg", n_features=5, n_classes=2),
        x,
        np.ones(10, dtype=np.int64),
        device=torch.device("cpu"),
    )
    assert math.isnan(result.auroc) and 0 <= result.accuracy <= 1


def test_balanced_weights_lift_the_rare_class_and_skip_absent_ones() -> None:
    from fedsafe.common.training import balanced_class_weights

    weights = balanced_class_weights(np.array([0] * 19 + [1]), 3)
    assert weights[1] == 19 * weights[0] and weights[2] == 0
    assert np.isclose((weights[np.array([0] * 19 + [1])]).sum(), 20)


def test_weighted_dp_training_predicts_the_rare_class_more_often() -> None:
    from fedsafe.common.training import balanced_class_weights

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] > 1.6).astype(np.int64)  # about 5% positives
    preds = []
    for weights in (None, balanced_class_weights(y, 2)):
        model = build_model("logreg", n_features=5, n_classes=2, seed=0)
        train_local(
            model,
            x,
            y,
            epochs=5,
            batch_size=32,
            learning_rate=0.2,
            device=torch.device("cpu"),
            dp=DpSettings(0.5, 1.0),
            randomness=SeededRandomness(0),
            class_weights=weights,
        )
        preds.append(int(model(torch.from_numpy(x)).argmax(1).sum()))
    assert preds[1] > preds[0]


def test_multiclass_auroc_covers_the_classes_a_skewed_split_holds() -> None:
    x, _ = _data(30)
    y = np.array([0, 1, 2] * 10)
    model = build_model("logreg", n_features=5, n_classes=10)
    result = evaluate(model, x, y, device=torch.device("cpu"))
    assert 0 <= result.auroc <= 1
