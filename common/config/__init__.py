"""Typed, frozen configuration schemas and the one strict converter every config source uses.

`limits` holds the registries' names and the bounds, `sections` and `experiment` the frozen
dataclasses, `convert` the converter (pydantic over those dataclasses; key, value, allowed and the
source file in every error).
"""

from fedsafe.common.config.convert import from_dict, from_flat, load_json, to_dict, to_flat
from fedsafe.common.config.experiment import (
    ComplianceConfig,
    ConsentEntry,
    ExperimentConfig,
    FederationConfig,
    SecurityConfig,
)
from fedsafe.common.config.limits import (
    ACCOUNTANTS,
    DATASETS,
    MAX_CAP,
    MAX_DELTA,
    MAX_EPSILON,
    MAX_NOISE,
    MAX_ROUNDS,
    MAX_TIMEOUT_S,
    MODELS,
    NATURAL_SITES,
    STRATEGIES,
)
from fedsafe.common.config.monitoring import MonitoringConfig
from fedsafe.common.config.sections import (
    ClientLevelConfig,
    DatasetConfig,
    ModelConfig,
    PrivacyConfig,
    StrategyConfig,
    TrainingConfig,
)

__all__ = [
    "DatasetConfig",
    "ModelConfig",
    "ClientLevelConfig",
    "PrivacyConfig",
    "TrainingConfig",
    "StrategyConfig",
    "FederationConfig",
    "ConsentEntry",
    "ComplianceConfig",
    "SecurityConfig",
    "MonitoringConfig",
    "ExperimentConfig",
    "from_dict",
    "from_flat",
    "to_dict",
    "to_flat",
    "load_json",
    "DATASETS",
    "MODELS",
    "STRATEGIES",
    "ACCOUNTANTS",
    "NATURAL_SITES",
    "MAX_ROUNDS",
    "MAX_EPSILON",
    "MAX_CAP",
    "MAX_NOISE",
    "MAX_DELTA",
    "MAX_TIMEOUT_S",
]
