"""The strict config converter: every bad value names its key, the value and what is allowed."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from fedsafe.common.config import (
    ExperimentConfig,
    from_dict,
    from_flat,
    load_json,
    to_dict,
    to_flat,
)
from fedsafe.common.errors import ConfigError


def test_defaults_round_trip_through_dict_and_flat() -> None:
    cfg = ExperimentConfig()
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg
    assert from_flat(to_flat(cfg)) == cfg


def test_unknown_key_names_it_and_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, {"privacy": {"target_epsilom": 3}}, source="my.yaml")
    message = str(err.value)
    assert "privacy.target_epsilom" in message
    assert "did you mean 'privacy.target_epsilon'" in message
    assert "my.yaml" in message


def test_out_of_range_delta_names_key_value_and_range() -> None:
    with pytest.raises(
        ConfigError, match=r"config key 'privacy.delta'.*got 1.5; allowed: a float in \(0, 0.1\]"
    ):
        from_dict(ExperimentConfig, {"privacy": {"delta": 1.5}})


def test_wrong_type_names_the_type_allowed() -> None:
    with pytest.raises(ConfigError, match=r"'training.rounds'.*got 'many'; allowed: int"):
        from_dict(ExperimentConfig, {"training": {"rounds": "many"}})


def test_unknown_dataset_lists_the_known_names() -> None:
    with pytest.raises(
        ConfigError, match=r"'dataset.name'.*got 'mnist'; allowed: .*'heart_disease'"
    ):
        from_dict(ExperimentConfig, {"dataset": {"name": "mnist"}})


def test_privacy_needs_exactly_one_of_target_and_noise() -> None:
    with pytest.raises(
        ConfigError, match="exactly one of privacy.target_epsilon and privacy.noise_multiplier"
    ):
        from_dict(ExperimentConfig, {"privacy": {"target_epsilon": 3.0, "noise_multiplier": 1.0}})
    cfg = from_dict(
        ExperimentConfig, {"privacy": {"target_epsilon": None, "noise_multiplier": 1.1}}
    )
    assert cfg.privacy.noise_multiplier == 1.1


def test_natural_partition_only_for_datasets_with_real_sites() -> None:
    with pytest.raises(
        ConfigError, match="'dataset.partition'.*'natural' only for datasets with real sites"
    ):
        from_dict(ExperimentConfig, {"dataset": {"name": "breast_cancer", "partition": "natural"}})


def test_flower_run_config_keys_override_defaults() -> None:
    cfg = from_flat({"training.rounds": 3, "privacy.target-epsilon": "8", "experiment.name": "x"})
    assert (cfg.training.rounds, cfg.privacy.target_epsilon, cfg.name) == (3, 8.0, "x")
    with pytest.raises(ConfigError, match="'training.roundz'"):
        from_flat({"training.roundz": 3})


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match=f"got '{missing}'; allowed: an existing file"):
        load_json(missing)


def test_malformed_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="valid JSON"):
        load_json(path)
    path.write_text(json.dumps({"training": {"rounds": 0}}))
    with pytest.raises(ConfigError, match=f"'training.rounds' \\(from {path}\\): got 0"):
        load_json(path)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (
            {"privacy": {"target_epsilon": None, "noise_multiplier": float("inf")}},
            "noise_multiplier",
        ),
        ({"privacy": {"target_epsilon": None, "noise_multiplier": 0.0}}, "noise_multiplier"),
        ({"privacy": {"target_epsilon": float("inf")}}, "privacy.target_epsilon"),
        ({"privacy": {"max_grad_norm": float("inf")}}, "privacy.max_grad_norm"),
        ({"privacy": {"max_grad_norm": float("nan")}}, "privacy.max_grad_norm"),
        ({"privacy": {"delta": 0.5}}, "privacy.delta"),
        ({"training": {"learning_rate": float("inf")}}, "training.learning_rate"),
        ({"training": {"rounds": 1_000_000}}, "training.rounds"),
        ({"strategy": {"round_timeout_s": float("inf")}}, "strategy.round_timeout_s"),
        ({"federation": {"max_epsilon": float("inf")}}, "federation.max_epsilon"),
        ({"federation": {"caps": {"cleveland": float("inf")}}}, "federation.caps.cleveland"),
        ({"federation": {"min_noise_multiplier": float("inf")}}, "min_noise_multiplier"),
        ({"compliance": {"roll_call_timeout_s": float("inf")}}, "roll_call_timeout_s"),
        ({"privacy": {"enabled": False}}, "privacy.target_epsilon"),  # default target 3.0
        (
            {
                "privacy": {"enabled": False, "target_epsilon": None},
                "federation": {"caps": {"cleveland": 3.0}},
            },
            "federation.caps",
        ),
        ({"run_id": "../x"}, "run_id"),
        ({"name": "../x"}, "name"),
        ({"run_id": "a/b"}, "run_id"),
        ({"name": ".."}, "name"),
    ],
)
def test_values_that_would_fail_late_or_hang_are_refused_at_the_boundary(
    data: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"config key '[a-z_.]*{key}'.*got .*allowed: ") as err:
        from_dict(ExperimentConfig, data, source="my.yaml")
    assert "my.yaml" in str(err.value)


def test_privacy_off_without_target_or_caps_is_fine() -> None:
    cfg = from_dict(ExperimentConfig, {"privacy": {"enabled": False, "target_epsilon": None}})
    assert not cfg.privacy.enabled


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"training": {"rounds": True}}, "training.rounds", "int"),
        ({"training": {"rounds": False}}, "training.rounds", "int"),  # not 0: not a range error
        ({"privacy": {"max_grad_norm": True}}, "privacy.max_grad_norm", "float"),
        ({"privacy": {"target_epsilon": True}}, "privacy.target_epsilon", "float or null"),
        ({"federation": {"caps": {"cleveland": True}}}, "federation.caps.cleveland", "float"),
        ({"federation": {"release": {"decimals": True}}}, "federation.release.decimals", "int"),
        ({"privacy": {"enabled": 1}}, "privacy.enabled", "bool"),
        ({"privacy": {"enabled": "yes"}}, "privacy.enabled", "bool"),
        ({"resume": 0}, "resume", "bool"),
        ({"name": 5}, "name", "str"),
        ({"training": {"rounds": 4.5}}, "training.rounds", "int"),
    ],
)
def test_bools_are_never_numbers_nor_numbers_bools(
    data: dict[str, object], key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, data)
    assert (err.value.key, err.value.allowed) == (key, allowed)


def test_an_integral_float_is_an_int_and_text_booleans_are_booleans() -> None:
    cfg = from_dict(
        ExperimentConfig,
        {"training": {"rounds": 4.0}, "privacy": {"enabled": "False", "target_epsilon": None}},
    )
    assert cfg.training.rounds == 4 and isinstance(cfg.training.rounds, int)
    assert cfg.privacy.enabled is False


def test_flat_run_config_strings_become_values() -> None:
    """Flower's run config holds no None and no lists: "null" and comma-separated strings."""
    cfg = from_flat(
        {
            "privacy.enabled": "true",
            "privacy.target-epsilon": "null",
            "privacy.noise-multiplier": "1.5",
            "training.rounds": "4",
            "federation.sites": "cleveland,hungary",
            "compliance.jurisdictions": "",
        }
    )
    assert cfg.privacy.enabled is True and cfg.privacy.target_epsilon is None
    assert (cfg.privacy.noise_multiplier, cfg.training.rounds) == (1.5, 4)
    assert (cfg.federation.sites, cfg.compliance.jurisdictions) == (("cleveland", "hungary"), ())
    with pytest.raises(ConfigError, match=r"'privacy.enabled' \(from run config\): got '1'"):
        from_flat({"privacy.enabled": "1"}, source="run config")


def test_nested_tuples_and_mappings_are_checked_item_by_item() -> None:
    consent = {"site": "cleveland", "purposes": ["cardiology-research"]}
    cfg = from_dict(
        ExperimentConfig,
        {"compliance": {"consent": [consent]}, "federation": {"caps": {"cleveland": 2}}},
    )
    assert cfg.compliance.consent[0].purposes == ("cardiology-research",)
    assert cfg.federation.caps == {"cleveland": 2.0}
    for data, key, allowed in [
        ({"compliance": {"consent": ["cleveland"]}}, "compliance.consent[0]", "a mapping"),
        ({"compliance": {"consent": [{"purposes": []}]}}, "compliance.consent[0].site", "a value"),
        ({"federation": {"sites": ["a", 1]}}, "federation.sites[1]", "str"),
        ({"federation": {"sites": "a,b"}}, "federation.sites", "a list of str"),
        ({"federation": {"caps": [1.0]}}, "federation.caps", "a mapping of str to float"),
    ]:
        with pytest.raises(ConfigError) as err:
            from_dict(ExperimentConfig, data)
        assert err.value.key == key and err.value.allowed.startswith(allowed), data


def test_a_check_inside_a_nested_section_keeps_its_key_and_the_source() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(
            ExperimentConfig,
            {"compliance": {"consent": [{"site": "cleveland", "withdraw_at_round": 0}]}},
            source="my.yaml",
        )
    assert err.value.key == "compliance.consent[cleveland].withdraw_at_round"
    assert err.value.source == "my.yaml"
    with pytest.raises(ConfigError, match=r"'federation.release.decimals'.*got 9; allowed"):
        from_dict(ExperimentConfig, {"federation": {"release": {"decimals": 9}}})
    with pytest.raises(ConfigError, match="did you mean 'federation.release.decimals'"):
        from_dict(ExperimentConfig, {"federation": {"release": {"decimalz": 2}}})


def test_a_non_mapping_is_refused_at_its_key() -> None:
    with pytest.raises(ConfigError, match=r"config key 'privacy': got 3; allowed: a mapping"):
        from_dict(ExperimentConfig, {"privacy": 3})
    with pytest.raises(ConfigError, match=r"config key '<root>': got \[\]; allowed: a mapping"):
        from_dict(ExperimentConfig, [])


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"seed": b"1"}, "seed"),
        ({"seed": Decimal(1)}, "seed"),
        ({"name": b"run"}, "name"),
        ({"federation": {"sites": {"cleveland", "hungary"}}}, "federation.sites"),
    ],
    ids=["bytes-as-int", "decimal-as-int", "bytes-as-str", "set-as-list"],
)
def test_what_no_config_file_can_hold_is_refused_from_python_too(
    data: dict[str, object], key: str
) -> None:
    """A set would reorder and silently drop duplicates before the distinct-names check; bytes
    and Decimal are never what a YAML, JSON or run-config value means."""
    with pytest.raises(ConfigError) as caught:
        from_dict(ExperimentConfig, data)
    assert caught.value.key == key
