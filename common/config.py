"""Typed, frozen configuration schemas and the one strict converter every config source uses."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedsafe.common.errors import ConfigError
from fedsafe.common.names import check_name
from fedsafe.common.release_policy import ReleasePolicy

__all__ = [
    "DatasetConfig",
    "ModelConfig",
    "PrivacyConfig",
    "TrainingConfig",
    "StrategyConfig",
    "FederationConfig",
    "ConsentEntry",
    "ComplianceConfig",
    "SecurityConfig",
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
]

# Registries' names live here so that a config can be checked without importing torch.
DATASETS = (
    "heart_disease",
    "breast_cancer",
    "lending_club",
    "credit_data",
    "digits",
    "fashion_mnist",
    "site_files",
)
MODELS = ("logreg", "mlp", "cnn")
STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedadam",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
)
ACCOUNTANTS = ("rdp", "prv")
# Data sets whose rows already belong to real sites (hospitals, regional banks, site files).
NATURAL_SITES = ("heart_disease", "lending_club", "site_files")


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _within(key: str, value: float, low: float, high: float, *, low_open: bool = True) -> None:
    """A finite number in (low, high] (or [low, high]): infinities and NaN never pass."""
    above = value > low if low_open else value >= low
    ok = math.isfinite(value) and above and value <= high
    _check(ok, key, value, f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}]")


# Upper bounds: far beyond any sensible run, low enough that nothing hangs or overflows later.
MAX_ROUNDS = 1_000
MAX_EPSILON = 1_000.0
MAX_CAP = 1e9  # a cap this high means "no cap" (benchmarks); infinity fails inside the site
MAX_NOISE = 100.0
MAX_DELTA = 0.1
MAX_TIMEOUT_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class DatasetConfig:
    """Which data each site holds and how a pooled set is split into sites."""

    name: Literal[
        "heart_disease",
        "breast_cancer",
        "lending_club",
        "credit_data",
        "digits",
        "fashion_mnist",
        "site_files",
    ] = "heart_disease"
    partition: Literal["natural", "iid", "dirichlet"] = "natural"
    num_sites: int = 4
    alpha: float = 0.5
    test_fraction: float = 0.2
    seed: int = 42
    files: tuple[str, ...] = ()  # site_files: one data file (CSV/Parquet) per simulated site
    schema: str | None = None  # site_files: the schema file all sites share

    def __post_init__(self) -> None:
        _within("dataset.num_sites", self.num_sites, 1, 1000, low_open=False)
        _within("dataset.alpha", self.alpha, 0, 1e6)
        _check(
            0 < self.test_fraction < 1,
            "dataset.test_fraction",
            self.test_fraction,
            "a float in (0, 1)",
        )
        if self.name == "site_files":
            _check(bool(self.files), "dataset.files", list(self.files), "one data file per site")
            _check(self.schema is not None, "dataset.schema", self.schema, "a schema file path")


@dataclass(frozen=True)
class ModelConfig:
    """Model by registry name; every registered model is valid under Opacus."""

    name: Literal["logreg", "mlp", "cnn"] = "mlp"
    hidden: int = 32

    def __post_init__(self) -> None:
        _within("model.hidden", self.hidden, 1, 65536, low_open=False)


@dataclass(frozen=True)
class PrivacyConfig:
    """Sample-level DP-SGD at each site.

    Either `noise_multiplier` is given, or it is derived per site from `target_epsilon`
    for the planned rounds and local epochs at that site's real sample rate.
    """

    enabled: bool = True
    target_epsilon: float | None = 3.0
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"

    def __post_init__(self) -> None:
        _check(
            math.isfinite(self.delta) and 0 < self.delta <= MAX_DELTA,
            "privacy.delta",
            self.delta,
            f"a float in (0, {MAX_DELTA:g}] (a failure probability: keep it far below 1/n)",
        )
        _within("privacy.max_grad_norm", self.max_grad_norm, 0, 1e4)
        if self.target_epsilon is not None:
            _check(
                math.isfinite(self.target_epsilon) and 0 < self.target_epsilon <= MAX_EPSILON,
                "privacy.target_epsilon",
                self.target_epsilon,
                f"a finite float in (0, {MAX_EPSILON:g}], or null to use privacy.noise_multiplier",
            )
        if self.noise_multiplier is not None:
            _check(
                math.isfinite(self.noise_multiplier) and 0 < self.noise_multiplier <= MAX_NOISE,
                "privacy.noise_multiplier",
                self.noise_multiplier,
                f"a finite float in (0, {MAX_NOISE:g}] (0 gives no privacy: use privacy=off)",
            )
        if not self.enabled:
            for key, value in (
                ("target_epsilon", self.target_epsilon),
                ("noise_multiplier", self.noise_multiplier),
            ):
                _check(
                    value is None,
                    f"privacy.{key}",
                    value,
                    "null when privacy.enabled is false (no privacy means no target and no "
                    "noise: use privacy=off, or enable privacy)",
                )
        if self.enabled:
            _check(
                (self.target_epsilon is None) != (self.noise_multiplier is None),
                "privacy.target_epsilon",
                self.target_epsilon,
                "exactly one of privacy.target_epsilon and privacy.noise_multiplier set "
                f"(noise_multiplier is {self.noise_multiplier!r})",
            )


@dataclass(frozen=True)
class TrainingConfig:
    """Rounds and the local optimisation each site runs per round."""

    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1
    momentum: float = 0.0  # SGD momentum within a round (the optimiser is new every round)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # "balanced": for a rare outcome (a default, a disease) each site weights classes by
    # 1 / (k * p_c). Under DP, p is the prevalence the site declared (its policy, or
    # federation.class_prevalence in simulation), never its exact private counts, and each
    # example's weighted loss is its own term (sensitivity C); without DP the site's counts.
    class_weighting: Literal["none", "balanced"] = "none"

    def __post_init__(self) -> None:
        _within("training.rounds", self.rounds, 1, MAX_ROUNDS, low_open=False)
        _within("training.local_epochs", self.local_epochs, 1, 1000, low_open=False)
        _within("training.batch_size", self.batch_size, 1, 1_000_000, low_open=False)
        _within("training.learning_rate", self.learning_rate, 0, 10.0)
        _check(0 <= self.momentum < 1, "training.momentum", self.momentum, "a float in [0, 1)")


@dataclass(frozen=True)
class StrategyConfig:
    """Server aggregation: Flower's own strategies, chosen by name, and what one site may weigh.

    `max_weight_share`: no site's signed example count weighs more than this share of a
    round's total (larger ones are clipped). `max_update_norm`: an update further than this
    (L2) from the global model is dropped, and so is an aggregate. `num_malicious_sites`,
    `trim_fraction`, `num_selected_sites`: the robust strategies' f, beta and MultiKrum's m.
    """

    name: Literal[
        "fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"
    ] = "fedavg"
    fraction_train: float = 1.0
    min_sites: int = 2
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.05
    round_timeout_s: float = 600.0
    max_weight_share: float = 0.5
    max_update_norm: float = 100.0
    num_malicious_sites: int = 1
    trim_fraction: float = 0.25
    num_selected_sites: int = 2

    def __post_init__(self) -> None:
        _check(
            0 < self.fraction_train <= 1,
            "strategy.fraction_train",
            self.fraction_train,
            "a float in (0, 1]",
        )
        _check(self.min_sites >= 1, "strategy.min_sites", self.min_sites, "an integer >= 1")
        _within("strategy.proximal_mu", self.proximal_mu, 0, 1000.0, low_open=False)
        _within("strategy.server_learning_rate", self.server_learning_rate, 0, 10.0)
        _within("strategy.round_timeout_s", self.round_timeout_s, 0, MAX_TIMEOUT_S)
        _check(
            0 < self.max_weight_share <= 1,
            "strategy.max_weight_share",
            self.max_weight_share,
            "a float in (0, 1]",
        )
        _check(
            0 < self.max_update_norm < math.inf,
            "strategy.max_update_norm",
            self.max_update_norm,
            "a finite float > 0",
        )
        _check(
            self.num_malicious_sites >= 0,
            "strategy.num_malicious_sites",
            self.num_malicious_sites,
            "an integer >= 0",
        )
        _check(
            0 <= self.trim_fraction < 0.5,
            "strategy.trim_fraction",
            self.trim_fraction,
            "a float in [0, 0.5)",
        )
        _check(
            self.num_selected_sites >= 1,
            "strategy.num_selected_sites",
            self.num_selected_sites,
            "an integer >= 1",
        )


@dataclass(frozen=True)
class FederationConfig:
    """Who takes part in a simulation, their simulated site policy, and the engine's resources.

    Each simulated site keeps its own budget store under `<runs_dir>/sites/<site>/`, so a
    second run or a sweep on the same data keeps charging the same budget, unless
    `fresh_budget` gives this run new stores inside its run folder.
    """

    name: str = "hospitals"
    sites: tuple[str, ...] = ()
    cpus_per_site: float = 1.0
    max_parallel_sites: int = 2
    max_epsilon: float = 30.0
    caps: dict[str, float] = field(default_factory=dict)
    min_noise_multiplier: float = 0.3
    fresh_budget: bool = False
    # What simulated sites release besides DP updates (a deployed site's own site.yaml decides).
    release: ReleasePolicy = field(default_factory=ReleasePolicy)
    # Declared class prevalence of the simulated sites (public, e.g. a published default rate):
    # the only class weights DP training may use.
    class_prevalence: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.class_prevalence:
            _check(
                all(0 < p < 1 for p in self.class_prevalence)
                and abs(sum(self.class_prevalence) - 1) < 1e-6,
                "federation.class_prevalence",
                list(self.class_prevalence),
                "one probability in (0, 1) per class, summing to 1 (or empty)",
            )
        _within("federation.cpus_per_site", self.cpus_per_site, 0, 1024.0)
        _check(
            self.max_parallel_sites >= 1,
            "federation.max_parallel_sites",
            self.max_parallel_sites,
            "an integer >= 1",
        )
        _check(
            len(set(self.sites)) == len(self.sites),
            "federation.sites",
            list(self.sites),
            "distinct site names",
        )
        _within("federation.max_epsilon", self.max_epsilon, 0, MAX_CAP)
        for site, cap in self.caps.items():
            _within(f"federation.caps.{site}", cap, 0, MAX_CAP)
        _within(
            "federation.min_noise_multiplier",
            self.min_noise_multiplier,
            0,
            MAX_NOISE,
            low_open=False,
        )

    def cap_for(self, site: str) -> float:
        """The simulated site's own cap on its composed epsilon."""
        return self.caps.get(site, self.max_epsilon)


@dataclass(frozen=True)
class ConsentEntry:
    """One site's consent as a simulation declares it; the site signs it before the run."""

    site: str
    purposes: tuple[str, ...] = ()
    legal_basis: str = ""
    data_categories: tuple[str, ...] = ()
    jurisdiction: str = ""
    valid_from: str | None = None
    valid_until: str | None = None
    withdraw_at_round: int | None = None

    def __post_init__(self) -> None:
        if self.withdraw_at_round is not None:
            _check(
                self.withdraw_at_round >= 1,
                f"compliance.consent[{self.site}].withdraw_at_round",
                self.withdraw_at_round,
                "an integer >= 1 or null",
            )


@dataclass(frozen=True)
class ComplianceConfig:
    """The run's declared purpose and jurisdiction policy, and (in simulation) the sites' consent.

    An empty `consent` means every site consents to the run's purpose (a simulation default);
    a site left out of a non-empty list has no consent and is excluded every round.
    """

    purpose: str = "cardiology-research"
    jurisdictions: tuple[str, ...] = ()
    consent: tuple[ConsentEntry, ...] = ()
    site_keys_dir: str | None = None  # deployment: enrolled <site>.pub files; None: simulated sites
    server_keys_dir: str | None = (
        None  # the server's signing key; None: <runs_dir>/coordinator/keys
    )
    consent_registry: str | None = None  # deployment: the registry file/URL; None: per run folder
    roll_call_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        _check(
            bool(self.purpose.strip()), "compliance.purpose", self.purpose, "a non-empty purpose"
        )
        _within("compliance.roll_call_timeout_s", self.roll_call_timeout_s, 0, MAX_TIMEOUT_S)


@dataclass(frozen=True)
class SecurityConfig:
    """How updates travel: sealed end to end to the ServerApp, or through secure aggregation.

    `sealed_updates`: each site encrypts its update to the ServerApp's X25519 key, bound to
    run, round and site; the relay (SuperLink, its database, proxies) holds only ciphertext.
    `secure_aggregation`: Flower's SecAgg+ with fedsafe's hardening (server/secagg.py); the
    server sees only the sum, so per-update seals and attestation checks do not apply there.
    """

    sealed_updates: bool = True
    secure_aggregation: bool = False
    secagg_threshold: int | None = None  # shares needed to unmask; None: a strict majority
    secagg_clipping_range: float = 8.0  # |weight| bound the quantiser covers

    def __post_init__(self) -> None:
        if self.secagg_threshold is not None:
            _check(
                self.secagg_threshold >= 2,
                "security.secagg_threshold",
                self.secagg_threshold,
                "an integer >= 2 or null",
            )
        _check(
            math.isfinite(self.secagg_clipping_range) and self.secagg_clipping_range > 0,
            "security.secagg_clipping_range",
            self.secagg_clipping_range,
            "a finite float > 0",
        )


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs; the only object the apps see."""

    name: str = "heart"
    runs_dir: str = "runs"
    run_id: str | None = None  # the run folder's name; default <name>-<timestamp>
    resume: bool = False  # continue run_id from its last checkpoint
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    compliance: ComplianceConfig = field(default_factory=ComplianceConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    def __post_init__(self) -> None:
        check_name("name", self.name)  # part of the run folder's name
        if self.run_id is not None:
            check_name("run_id", self.run_id)  # the run folder's name
        if not self.privacy.enabled:
            _check(
                not self.federation.caps,
                "federation.caps",
                dict(self.federation.caps),
                "no caps when privacy.enabled is false (a non-private run spends no budget a "
                "cap could limit: enable privacy, or drop the caps)",
            )
        _check(
            not self.resume or bool(self.run_id),
            "resume",
            self.resume,
            "true only together with run_id (the run folder to continue)",
        )
        if self.dataset.partition == "natural":
            _check(
                self.dataset.name in NATURAL_SITES,
                "dataset.partition",
                "natural",
                f"'natural' only for datasets with real sites {list(NATURAL_SITES)}; "
                "use 'iid' or 'dirichlet'",
            )


# --------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {' to '.join(_type_name(a) for a in typing.get_args(tp))}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any, source: str | None) -> Any:
    """Coerce one leaf value to its declared type, or raise ConfigError naming it."""
    origin = typing.get_origin(tp)
    fail = ConfigError(key, value, _type_name(tp), source=source)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise fail
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg, source)
            except ConfigError:
                continue
        raise fail
    if origin is dict:
        if not isinstance(value, dict):
            raise fail
        key_tp, value_tp = typing.get_args(tp)
        return {
            _coerce(key, k, key_tp, source): _coerce(f"{key}.{k}", v, value_tp, source)
            for k, v in value.items()
        }
    if origin is tuple:
        (item_tp, *_) = typing.get_args(tp)
        if isinstance(item_tp, type) and dataclasses.is_dataclass(item_tp):
            if not isinstance(value, (list, tuple)):
                raise fail
            return tuple(
                from_dict(item_tp, v, source=source, prefix=f"{key}[{i}].")
                for i, v in enumerate(value)
            )
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise fail
        return tuple(_coerce(f"{key}[{i}]", v, item_tp, source) for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise fail
    if tp in (int, float):
        if isinstance(value, bool):  # True is an int to Python, never a number to a config
            raise fail
        if isinstance(value, float) and tp is int:
            if value.is_integer():
                return int(value)
            raise fail
        if isinstance(value, (int, float, str)):
            try:
                return tp(value)
            except ValueError:
                raise fail from None
        raise fail
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def from_dict(
    cls: type[Any], data: dict[Any, Any], *, source: str | None = None, prefix: str = ""
) -> Any:
    """Build a frozen config dataclass from nested plain data, strictly.

    Unknown keys, wrong types and out-of-range values raise ConfigError naming the
    dotted key, the value, what is allowed and the source file.
    """
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", data, "a mapping", source=source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{prefix}{key}", data[key], f"one of {sorted(fields)}{hint}", source=source
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, source=source, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, tp, source)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.source is None and source is not None:
            raise ConfigError(err.key, err.value, err.allowed, source=source) from None
        raise


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested data (tuples as lists) for JSON and YAML."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_flat(cfg: Any) -> dict[str, Any]:
    """Dotted keys -> leaf values, the shape Flower's run config carries."""
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(to_dict(cfg), "")
    return flat


def from_flat(flat: dict[str, Any], *, source: str | None = None) -> ExperimentConfig:
    """Dotted overrides (Flower run config, `--run-config`) applied over the defaults.

    Flower's run config cannot hold None or lists, so the string "null" means
    None and comma-separated strings fill list fields.
    """
    nested = to_dict(ExperimentConfig())
    for dotted, value in flat.items():
        key = dotted.replace("-", "_")
        if key == "experiment.name":
            key = "name"
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(dotted, value, "a known dotted config key", source=source)
            node = child
        if leaf not in node:
            known = [k for k in node if not isinstance(node[k], dict)]
            raise ConfigError(
                dotted, value, f"one of {known} under '{'.'.join(parents)}'", source=source
            )
        if isinstance(value, str) and value.lower() == "null":
            value = None
        node[leaf] = value
    return from_dict(ExperimentConfig, nested, source=source)


def load_json(path: Path) -> ExperimentConfig:
    """Read a resolved config written by a previous run (config.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file", str(path), "an existing file", source=str(path)) from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            "config file", str(path), f"valid JSON ({err})", source=str(path)
        ) from None
    return from_dict(ExperimentConfig, data, source=str(path))
