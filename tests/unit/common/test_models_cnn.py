"""The model registry: an Opacus-valid CNN for images, tabular models unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

from fedsafe.common.config import MODELS as CONFIG_MODELS
from fedsafe.common.config import DatasetConfig
from fedsafe.common.data import dataset_info, load_site
from fedsafe.common.errors import ConfigError
from fedsafe.common.models import MODELS, build_model
from fedsafe.common.privacy.randomness import OsRandomness
from fedsafe.common.training import DpSettings, evaluate, train_local


def test_registry_names_match_the_config_schema() -> None:
    # Arrange / Act / Assert
    assert set(MODELS) == set(CONFIG_MODELS)


@pytest.mark.parametrize("name", ["cnn", "mlp", "logreg"])
@pytest.mark.parametrize("dataset", ["digits", "fashion_mnist"])
def test_image_models_pass_opacus_strict_validation(name: str, dataset: str) -> None:
    # Arrange
    info = dataset_info(dataset)

    # Act
    model = build_model(
        name, n_features=info.n_features, n_classes=info.n_classes, input_shape=info.input_shape
    )
    out = model(torch.zeros(3, *info.input_shape))

    # Assert
    ModuleValidator.validate(model, strict=True)  # raises on BatchNorm etc.
    assert out.shape == (3, 10)


def test_cnn_uses_groupnorm_and_no_batchnorm() -> None:
    # Arrange / Act
    model = build_model("cnn", n_features=64, n_classes=10, input_shape=(1, 8, 8))
    kinds = {type(m).__name__ for m in model.modules()}

    # Assert
    assert "GroupNorm" in kinds and not any("BatchNorm" in k for k in kinds)


def test_cnn_without_an_image_shape_is_a_config_error() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ConfigError, match="cnn"):
        build_model("cnn", n_features=64, n_classes=10)


def test_tabular_callers_keep_working_with_the_same_parameter_names() -> None:
    # Arrange / Act
    model = build_model("mlp", n_features=31, n_classes=2, hidden=8, seed=3)
    again = build_model("mlp", n_features=31, n_classes=2, hidden=8, seed=3)

    # Assert
    assert list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
        "4.weight",
        "4.bias",
    ]
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    assert model(torch.zeros(4, 31)).shape == (4, 2)


def test_dp_training_step_on_digits_with_the_cnn_runs() -> None:
    # Arrange
    cfg = DatasetConfig(name="digits", partition="iid", num_sites=4, seed=0)
    site = load_site(cfg, 0)
    info = dataset_info("digits")
    model = build_model("cnn", n_features=64, n_classes=10, input_shape=info.input_shape, seed=1)
    before = [p.detach().clone() for p in model.parameters()]

    # Act
    result = train_local(
        model,
        site.x_train,
        site.y_train,
        epochs=1,
        batch_size=64,
        learning_rate=0.1,
        device=torch.device("cpu"),
        dp=DpSettings(noise_multiplier=1.0, max_grad_norm=1.0),
        randomness=OsRandomness(),
    )
    metrics = evaluate(model, site.x_test, site.y_test, device=torch.device("cpu"))

    # Assert
    assert result.steps >= 1 and math.isfinite(result.loss)
    assert 0 < result.sample_rate <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert metrics.num_examples == len(site.y_test) and np.isfinite(metrics.auroc)
