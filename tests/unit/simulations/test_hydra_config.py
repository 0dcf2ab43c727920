"""conf/ composes into valid frozen configs; a bad override stops with the key named."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir, initialize_config_module
from omegaconf import OmegaConf

from fedsafe.common.config import ExperimentConfig
from fedsafe.common.errors import ConfigError
from fedsafe.conf import __file__ as conf_init
from fedsafe.simulations.run import config_from_hydra

CONF = Path(conf_init).parent


def _compose(*overrides: str) -> ExperimentConfig:
    """As `fedsafe simulate` composes: with Hydra's own node, which says where values came from."""
    with initialize_config_module(config_module="fedsafe.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        return config_from_hydra(cfg)


def _plant(folder: Path, group_file: str, old: str, new: str) -> None:
    path = folder / group_file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


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

    declared = yaml.safe_load((CONF / "strategy" / f"{strategy}.yaml").read_text())
    cfg = _compose(f"strategy={strategy}", f"strategy.{field}={value * 2}")
    assert declared["name"] == cfg.strategy.name == strategy and declared[field] == value
    assert getattr(cfg.strategy, field) == value * 2  # an override still reaches the config


def test_bad_override_value_names_key_value_allowed_and_the_override() -> None:
    with pytest.raises(
        ConfigError,
        match=r"'privacy.delta' \(from command-line override 'privacy.delta=2.0'\): got 2.0; "
        r"allowed: a float in \(0, 0.1\]",
    ):
        _compose("privacy.delta=2.0")
    with pytest.raises(ConfigError, match=r"\(from command-line override 'training.rounds=yes'\)"):
        _compose("privacy=eps3", "training.rounds=yes")


@pytest.mark.parametrize(
    ("overrides", "file"),
    [
        # the override sets noise_multiplier; the clashing target comes from the group file
        (["privacy=eps3", "privacy.noise_multiplier=1.0"], "conf/privacy/eps3.yaml"),
        (["privacy.noise_multiplier=1.0"], "conf/privacy/dp.yaml"),
    ],
)
def test_a_value_from_a_shipped_group_file_names_that_file(overrides: list[str], file: str) -> None:
    with pytest.raises(ConfigError) as err:
        _compose(*overrides)
    assert err.value.key == "privacy.target_epsilon"
    assert f"(from {file}): got 3.0" in str(err.value)


def test_a_bad_value_in_a_group_file_on_the_search_path_names_that_file(tmp_path: Path) -> None:
    # Arrange: privacy/eps3.yaml copied as privacy/bad.yaml, with a negative target
    (tmp_path / "privacy").mkdir()
    shutil.copy(CONF / "privacy" / "eps3.yaml", tmp_path / "privacy" / "bad.yaml")
    _plant(tmp_path, "privacy/bad.yaml", "target_epsilon: 3.0", "target_epsilon: -1")
    bad = tmp_path / "privacy" / "bad.yaml"

    # Act
    with pytest.raises(ConfigError) as err:
        _compose(f"hydra.searchpath=[file://{tmp_path}]", "privacy=bad")

    # Assert
    assert str(err.value).startswith(
        f"config key 'privacy.target_epsilon' (from {bad}): got -1.0; allowed: a finite float"
    )


@pytest.mark.parametrize(
    ("group_file", "old", "new", "key"),
    [
        ("config.yaml", "seed: 0", "seed: zero", "seed"),
        ("training/default.yaml", "batch_size: 32", "batch_size: 0", "training.batch_size"),
        # a global group file sets another group's key: the file that set it is named
        ("federation/banks.yaml", "class_weighting: balanced", "class_weighting: x", None),
    ],
)
def test_a_bad_value_in_a_copied_conf_names_the_file_it_came_from(
    tmp_path: Path, group_file: str, old: str, new: str, key: str | None
) -> None:
    # Arrange: the whole conf/ copied, one value planted
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    _plant(conf, group_file, old, new)
    overrides = ["federation=banks"] if group_file.startswith("federation") else []

    # Act
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        with pytest.raises(ConfigError) as err:
            config_from_hydra(cfg)

    # Assert
    assert err.value.key == (key or "training.class_weighting")
    assert err.value.source == str(conf / group_file)


def test_simulate_refuses_a_planted_value_before_any_folder_naming_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run folder's resolver validates first (as `fedsafe simulate` does), with the file."""
    (tmp_path / "privacy").mkdir()
    shutil.copy(CONF / "privacy" / "dp.yaml", tmp_path / "privacy" / "bad.yaml")
    _plant(tmp_path, "privacy/bad.yaml", "delta: 1.0e-5", "delta: 2.0")
    overrides = [f"hydra.searchpath=[file://{tmp_path}]", "privacy=bad", f"runs_dir={tmp_path}"]
    with initialize_config_module(config_module="fedsafe.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        with pytest.raises(SystemExit):
            OmegaConf.select(cfg, "hydra.run.dir")
    assert f"config key 'privacy.delta' (from {tmp_path / 'privacy' / 'bad.yaml'}): got 2.0" in (
        capsys.readouterr().err
    )


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
        ["federation=imaging_digits"],
        ["federation=flamby"],
        ["strategy.fairness_q=3"],
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


def test_the_flamby_federation_is_the_measured_one() -> None:
    """README's FLamby table was measured with this federation: logistic regression at 0.5."""
    cfg = _compose("federation=flamby")
    assert cfg.dataset.protocol == "flamby" and cfg.model.name == "logreg"
    assert cfg.training.learning_rate == 0.5
