"""conf/ composes into valid frozen configs; a bad override stops with the key named."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fedsafe.common.errors import ConfigError
from fedsafe.simulations.run import config_from_hydra


def _compose(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_module(config_module="fedsafe.conf", version_base="1.3"):
        return config_from_hydra(compose(config_name="config", overrides=list(overrides)))


def test_default_composition_is_the_four_hospital_dp_run() -> None:
    cfg = _compose()
    assert cfg.dataset.name == "heart_disease" and cfg.dataset.partition == "natural"
    assert cfg.privacy.enabled and cfg.privacy.target_epsilon == 3.0 and cfg.privacy.delta == 1e-5
    assert cfg.strategy.name == "fedavg"


@pytest.mark.parametrize(("option", "target"), [("eps1", 1.0), ("eps3", 3.0), ("eps8", 8.0)])
def test_sweep_privacy_options_compose(option: str, target: float) -> None:
    assert _compose(f"privacy={option}").privacy.target_epsilon == target


def test_privacy_off_composes_without_a_target() -> None:
    cfg = _compose("privacy=off")
    assert not cfg.privacy.enabled and cfg.privacy.target_epsilon is None


@pytest.mark.parametrize(
    ("strategy", "field", "value"),
    [("fedprox", "proximal_mu", 0.01), ("fedadam", "server_learning_rate", 0.05)],
)
def test_strategy_groups_compose_with_their_own_settings(
    strategy: str, field: str, value: float
) -> None:
    """Each group file sets its own name and parameters, read from conf/strategy/NAME.yaml."""
    import yaml

    from fedsafe.conf import __file__ as conf_init

    declared = yaml.safe_load(
        (Path(conf_init).parent / "strategy" / f"{strategy}.yaml").read_text()
    )
    cfg = _compose(f"strategy={strategy}", f"strategy.{field}={value * 2}")
    assert declared["name"] == cfg.strategy.name == strategy and declared[field] == value
    assert getattr(cfg.strategy, field) == value * 2  # an override still reaches the config


def test_bad_override_value_names_key_value_and_allowed() -> None:
    with pytest.raises(
        ConfigError,
        match=r"'privacy.delta' \(from conf/.*\): got 2.0; allowed: a float in \(0, 0.1\]",
    ):
        _compose("privacy.delta=2.0")


def test_unknown_dataset_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="dataset.name"):
        _compose("dataset.name=imagenet")


@pytest.mark.parametrize(
    "overrides",
    [
        ["training.rounds=5", "privacy.target_epsilon=8"],
        ["privacy=off", "strategy=fedprox"],
        ["federation=banks"],
        ["federation=imaging"],
        ["federation=open", "dataset=breast_cancer", "dataset.alpha=0.3"],
        ["+federation.caps.switzerland=2.5"],
        ["security.secure_aggregation=true"],
        ["run_id=trial-7", "training.rounds=20", "resume=true"],
    ],
)
def test_the_readme_examples_compose(overrides: list[str]) -> None:
    """Every `key=value` in a README example lands in the composed config as written."""
    import yaml

    cfg = _compose(*overrides)
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        node: object = cfg
        for part in key.split("."):
            node = node[part] if isinstance(node, Mapping) else getattr(node, part)
        if key in ("privacy", "strategy", "federation", "dataset"):  # a group: what it selects
            continue
        assert node == yaml.safe_load(value), key
