"""The run's config sections: data, model, privacy, training and strategy (frozen, checked)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from fedsafe.common.config.limits import (
    MAX_DELTA,
    MAX_EPSILON,
    MAX_NOISE,
    MAX_ROUNDS,
    MAX_TIMEOUT_S,
    AccountantName,
    DatasetName,
    ModelName,
    StrategyName,
    _check,
    _within,
)

__all__ = [
    "ClientLevelConfig",
    "DatasetConfig",
    "ModelConfig",
    "PrivacyConfig",
    "TrainingConfig",
    "StrategyConfig",
]


@dataclass(frozen=True)
class DatasetConfig:
    """Which data each site holds and how a pooled set is split into sites."""

    name: DatasetName = "heart_disease"
    partition: Literal["natural", "iid", "dirichlet"] = "natural"
    # "flamby": FLamby's Fed-Heart-Disease columns, rows and fixed per-hospital split, so the
    # figures compare with FLamby's published ones (heart_disease, natural partition only).
    protocol: Literal["fedsafe", "flamby"] = "fedsafe"
    # "scattering": images become fixed scattering coefficients at the site (Tramer & Boneh's
    # ScatterNet features, common/data/scattering.py) for model=scatter_linear.
    features: Literal["pixels", "scattering"] = "pixels"
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
        if self.protocol == "flamby":
            _check(
                self.name == "heart_disease" and self.partition == "natural",
                "dataset.protocol",
                self.protocol,
                "'flamby' only with dataset.name=heart_disease and dataset.partition=natural "
                "(FLamby's protocol is the four hospitals as they are)",
            )
        if self.features == "scattering":
            _check(
                self.name in ("digits", "fashion_mnist"),
                "dataset.features",
                self.features,
                "'scattering' only for image data sets (digits, fashion_mnist)",
            )
        if self.name == "site_files":
            _check(bool(self.files), "dataset.files", list(self.files), "one data file per site")
            _check(self.schema is not None, "dataset.schema", self.schema, "a schema file path")


@dataclass(frozen=True)
class ModelConfig:
    """Model by registry name; every registered model is valid under Opacus."""

    name: ModelName = "mlp"
    hidden: int = 32

    def __post_init__(self) -> None:
        _within("model.hidden", self.hidden, 1, 65536, low_open=False)


@dataclass(frozen=True)
class ClientLevelConfig:
    """Client-level DP on top of the sites' sample-level DP (common/privacy/client_level.py).

    `central`: the coordinator clips each site's update to `clipping_norm` and adds the noise
    to the mean (Flower's server-side fixed-clipping wrapper, noise from the OS CSPRNG): it
    protects a site against whoever sees a released model, not against the coordinator.
    `distributed`: under secure aggregation each site clips its own update and adds its share
    of the noise, so the coordinator sees only the noised sum. The noise multiplier is planned
    from `target_epsilon` for the planned rounds, or given; `max_epsilon` caps the run.
    """

    mode: Literal["off", "central", "distributed"] = "off"
    target_epsilon: float | None = 8.0
    noise_multiplier: float | None = None
    clipping_norm: float = 0.5
    max_epsilon: float | None = None

    def __post_init__(self) -> None:
        _within("privacy.client_level.clipping_norm", self.clipping_norm, 0, 1e4)
        for key, value in (
            ("target_epsilon", self.target_epsilon),
            ("max_epsilon", self.max_epsilon),
        ):
            if value is not None:
                _within(f"privacy.client_level.{key}", value, 0, MAX_EPSILON)
        if self.noise_multiplier is not None:
            _within("privacy.client_level.noise_multiplier", self.noise_multiplier, 0, MAX_NOISE)
        if self.mode != "off":
            _check(
                (self.target_epsilon is None) != (self.noise_multiplier is None),
                "privacy.client_level.target_epsilon",
                self.target_epsilon,
                "exactly one of privacy.client_level.target_epsilon and noise_multiplier set "
                f"(noise_multiplier is {self.noise_multiplier!r})",
            )


@dataclass(frozen=True)
class PrivacyConfig:
    """Sample-level DP-SGD at each site, and optionally client-level DP (`client_level`).

    Either `noise_multiplier` is given, or it is derived per site from `target_epsilon`
    for the planned rounds and local epochs at that site's real sample rate.
    """

    enabled: bool = True
    target_epsilon: float | None = 3.0
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: AccountantName = "rdp"
    client_level: ClientLevelConfig = field(default_factory=ClientLevelConfig)

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
    # How a site turns the model's probabilities into a decision on its held-out rows.
    # "prevalence": argmax_c p(c|x) / p_c, p the declared class prevalence: the rule that
    # minimises balanced error for calibrated probabilities (post-hoc logit adjustment, Menon
    # et al., ICLR 2021); it reads nothing of the site's rows.
    # "balanced": argmax_c p(c|x) / m_c, m_c the model's own mean predicted probability of c
    # over the rows it decides on (no label read). A DP model is not calibrated: clipping each
    # example's gradient to C shrinks a rare class's pull, so its p(rare|x) sits below the
    # prevalence for everyone; dividing by the model's own mean undoes that shift.
    decision_rule: Literal["argmax", "prevalence", "balanced"] = "argmax"
    # Bits per value of the update a site sends: 32 sends float32 as trained; 8 sends its
    # difference from the global model stochastically rounded to 8 bits per tensor (a scale and
    # offset alongside), after DP-SGD: post-processing, so no privacy figure changes.
    update_bits: Literal[32, 8] = 32

    def __post_init__(self) -> None:
        _within("training.rounds", self.rounds, 1, MAX_ROUNDS, low_open=False)
        _within("training.local_epochs", self.local_epochs, 1, 1000, low_open=False)
        _within("training.batch_size", self.batch_size, 1, 1_000_000, low_open=False)
        _within("training.learning_rate", self.learning_rate, 0, 10.0)
        _check(
            not (self.decision_rule == "prevalence" and self.class_weighting == "balanced"),
            "training.decision_rule",
            self.decision_rule,
            "'argmax' or 'balanced' with training.class_weighting=balanced (class weights already "
            "divide by the prevalence: dividing the decision by it again flags every row)",
        )
        _check(0 <= self.momentum < 1, "training.momentum", self.momentum, "a float in [0, 1)")


@dataclass(frozen=True)
class StrategyConfig:
    """Server aggregation: Flower's own strategies, chosen by name, and what one site may weigh.

    `max_weight_share`: no site's signed example count weighs more than this share of a
    round's total (larger ones are clipped). `max_update_norm`: an update further than this
    (L2) from the global model is dropped, and so is an aggregate. `num_malicious_sites`,
    `trim_fraction`, `num_selected_sites`: the robust strategies' f, beta and MultiKrum's m.
    """

    name: StrategyName = "fedavg"
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
    # q-FFL's reweighting toward the sites the model serves worst (0: off): see
    # server/aggregate.py::fairness_factors
    fairness_q: float = 0.0

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
        _within("strategy.fairness_q", self.fairness_q, 0, 10.0, low_open=False)
