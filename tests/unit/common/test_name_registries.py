"""One name registry per kind: the config schema, its messages and the runtime registries agree.

Each kind's names are written once (a Literal in common/config/limits.py). A name added to a
runtime registry but not to the config (or the reverse) would be either unreachable or a
config that passes its check and then fails deep inside a run; these tests fail on either.
"""

from __future__ import annotations

import typing

import pytest

from fedsafe.common.config import (
    ACCOUNTANTS,
    DATASETS,
    MODELS,
    STRATEGIES,
    ExperimentConfig,
    from_dict,
)
from fedsafe.common.config.sections import DatasetConfig, ModelConfig, PrivacyConfig, StrategyConfig
from fedsafe.common.data import DATASETS as DATA_REGISTRY
from fedsafe.common.errors import ConfigError
from fedsafe.common.models import MODELS as MODEL_REGISTRY
from fedsafe.common.privacy import ACCOUNTANTS as ACCOUNTANT_REGISTRY
from fedsafe.server.strategies import STRATEGIES as STRATEGY_REGISTRY

KINDS = [
    ("dataset", "name", DatasetConfig, DATASETS, DATA_REGISTRY),
    ("model", "name", ModelConfig, MODELS, MODEL_REGISTRY),
    ("privacy", "accountant", PrivacyConfig, ACCOUNTANTS, ACCOUNTANT_REGISTRY),
    ("strategy", "name", StrategyConfig, STRATEGIES, STRATEGY_REGISTRY),
]
IDS = [k[0] for k in KINDS]


@pytest.mark.parametrize(("section", "field", "schema", "names", "registry"), KINDS, ids=IDS)
def test_the_config_field_the_names_and_the_runtime_registry_are_one_list(
    section: str, field: str, schema: type, names: tuple[str, ...], registry: dict[str, object]
) -> None:
    declared = typing.get_args(typing.get_type_hints(schema)[field])
    assert declared == names
    assert set(registry) == set(names)


@pytest.mark.parametrize(("section", "field", "schema", "names", "registry"), KINDS, ids=IDS)
def test_an_unknown_name_is_refused_listing_every_known_one(
    section: str, field: str, schema: type, names: tuple[str, ...], registry: dict[str, object]
) -> None:
    with pytest.raises(ConfigError) as caught:
        from_dict(ExperimentConfig, {section: {field: "no-such-name"}})
    assert caught.value.key == f"{section}.{field}"
    for name in names:
        assert repr(name) in caught.value.allowed
