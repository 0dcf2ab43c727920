"""conf/ composes into valid frozen configs; a bad override stops with the key named."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from fedsafe.common.errors import ConfigError
from fedsafe.simulations.run import config_from_hydra


def _compose(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_module(config_module="conf", version_base="1.3"):
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


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam"])
def test_strategies_compose(strategy: str) -> None:
    assert _compose(f"strategy={strategy}").strategy.name == strategy


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
    cfg = _compose(*overrides)
    assert cfg.training.rounds >= 1
