"""The whole run's config: federation, consent, compliance, security and the experiment itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fedsafe.common.config.limits import (
    MAX_CAP,
    MAX_NOISE,
    MAX_TIMEOUT_S,
    NATURAL_SITES,
    StrategyName,
    _check,
    _within,
)
from fedsafe.common.config.monitoring import MonitoringConfig
from fedsafe.common.config.sections import (
    DatasetConfig,
    ModelConfig,
    PrivacyConfig,
    StrategyConfig,
    TrainingConfig,
)
from fedsafe.common.names import check_name
from fedsafe.common.release_policy import ReleasePolicy

__all__ = [
    "FederationConfig",
    "ConsentEntry",
    "ComplianceConfig",
    "SecurityConfig",
    "ExperimentConfig",
]


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
    # GPUs each simulated site holds in Ray. None (auto): where training.device is not cpu and
    # CUDA is present, a share that lets `max_parallel_sites` train at once; else none. A site
    # given no GPU sees none (Ray hides them), so it trains on the CPU.
    gpus_per_site: float | None = None
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
        if self.gpus_per_site is not None:
            _within("federation.gpus_per_site", self.gpus_per_site, 0, 64.0, low_open=False)
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
    # In a simulation, how much longer the roll call keeps asking sites that have not answered
    # (their processes may still be starting on a loaded machine); 0 turns it off.
    start_patience_s: float = 600.0

    def __post_init__(self) -> None:
        _check(
            bool(self.purpose.strip()), "compliance.purpose", self.purpose, "a non-empty purpose"
        )
        _within("compliance.roll_call_timeout_s", self.roll_call_timeout_s, 0, MAX_TIMEOUT_S)
        _within(
            "compliance.start_patience_s", self.start_patience_s, 0, MAX_TIMEOUT_S, low_open=False
        )


# Strategies that need only the weighted mean of the updates: what secure aggregation gives.
SECURE_STRATEGIES: tuple[StrategyName, ...] = ("fedavg", "fedprox", "fedadam")
# Central DP noises what the strategy returns, so it must return the plain mean.
CENTRAL_DP_STRATEGIES: tuple[StrategyName, ...] = ("fedavg", "fedprox")


@dataclass(frozen=True)
class SecurityConfig:
    """How updates travel: sealed end to end to the ServerApp, or through secure aggregation.

    `sealed_updates`: each site encrypts its update to the ServerApp's X25519 key, bound to
    run, round and site; the relay (SuperLink, its database, proxies) holds only ciphertext.
    `secure_aggregation`: Flower's SecAgg+ with fedsafe's hardening inside the same
    coordinator loop (server/secure_aggregation.py): the server sees only the weighted sum,
    each site signs the masked vector it sent; no per-update seal (the mask is the secrecy).
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
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)

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
        if self.security.secure_aggregation:
            _check(
                self.strategy.name in SECURE_STRATEGIES,
                "strategy.name",
                self.strategy.name,
                f"one of {list(SECURE_STRATEGIES)} under security.secure_aggregation (the server "
                "sees only the weighted mean, so a robust rule has no updates to compare)",
            )
        mode = self.privacy.client_level.mode
        if self.training.update_bits != 32:
            _check(
                self.security.sealed_updates and not self.security.secure_aggregation,
                "training.update_bits",
                self.training.update_bits,
                "32 unless updates are sealed (security.sealed_updates=true, "
                "security.secure_aggregation=false): the 8-bit codes travel inside the sealed "
                "blob, and SecAgg+ (and distributed DP) already send updates on its own "
                "integer grid, which the coordinator sums without seeing any one update",
            )
        if self.strategy.fairness_q > 0:
            _check(
                not self.security.secure_aggregation and mode == "off",
                "strategy.fairness_q",
                self.strategy.fairness_q,
                "0 under security.secure_aggregation or client-level DP (the weights there are "
                "the sites' signed counts, or uniform for the DP bound, and cannot be reweighted)",
            )
        if mode == "central":
            _check(
                not self.security.secure_aggregation,
                "privacy.client_level.mode",
                mode,
                "'distributed' under security.secure_aggregation (the coordinator cannot clip "
                "updates it never sees)",
            )
            _check(
                self.strategy.name in CENTRAL_DP_STRATEGIES,
                "strategy.name",
                self.strategy.name,
                f"one of {list(CENTRAL_DP_STRATEGIES)} with central DP (its noise is "
                "calibrated to the mean of the clipped updates)",
            )
        if mode == "distributed":
            _check(
                self.security.secure_aggregation,
                "privacy.client_level.mode",
                mode,
                "'distributed' only with security.secure_aggregation=true (the noise shares "
                "must meet only in the masked sum); use 'central' otherwise",
            )
        if self.dataset.partition == "natural":
            _check(
                self.dataset.name in NATURAL_SITES,
                "dataset.partition",
                "natural",
                f"'natural' only for datasets with real sites {list(NATURAL_SITES)}; "
                "use 'iid' or 'dirichlet'",
            )
