"""`fedsafe privacy plan`: per-site noise, epsilon per joined round, where caps stop sites."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedsafe.common.config import PrivacyConfig, TrainingConfig
from fedsafe.common.privacy.accountants import Charge, epsilon_for, noise_for_target
from fedsafe.common.privacy.client_level import ClientLevelAccount
from fedsafe.common.privacy.planner import plan_shape

__all__ = [
    "FederationPlan",
    "SiteRow",
    "expected_rounds",
    "format_plan",
    "plan_federation",
    "plan_to_json",
]


@dataclass(frozen=True)
class SiteRow:
    """One site's plan. Round indices count the rounds the site joins, not federation rounds.

    `epsilon_after_round[j-1]` is the site's composed epsilon (prior spend included) after
    its j-th joined round, for j up to `rounds` (the most it could join). `cap_round` is the
    first joined round the site's cap refuses, or None if the cap never stops it.
    """

    site: str
    n_train: int
    participation: float
    expected_rounds: int
    sample_rate: float
    steps_per_round: int
    noise_multiplier: float | None
    prior_epsilon: float
    epsilon_after_round: tuple[float, ...]
    cap: float | None
    cap_round: int | None
    warnings: tuple[str, ...]

    @property
    def expected_epsilon(self) -> float:
        """Epsilon after the rounds the site expects to join (its prior spend if none)."""
        if self.expected_rounds == 0 or not self.epsilon_after_round:
            return self.prior_epsilon
        return self.epsilon_after_round[self.expected_rounds - 1]


@dataclass(frozen=True)
class FederationPlan:
    """The whole table plus the settings it was computed for."""

    rounds: int
    local_epochs: int
    batch_size: int
    delta: float
    accountant: str
    target_epsilon: float | None
    noise_multiplier: float | None
    sites: tuple[SiteRow, ...]
    client_level: ClientLevelAccount | None = None  # planned, no release made yet
    notes: tuple[str, ...] = ()  # about the whole federation (e.g. a benchmark protocol)

    @property
    def warnings(self) -> tuple[str, ...]:
        return (*(w for row in self.sites for w in row.warnings), *self.notes)


def expected_rounds(participation: float, rounds: int) -> int:
    """Rounds a site plans for: ceil(p * rounds), at least 1 when p > 0.

    Rounding up plans for one round more than the mean, never one fewer: the noise derived
    for the target then covers the expected count, and the cap column shows what happens
    when the site is sampled more often than expected.
    """
    return math.ceil(participation * rounds - 1e-9) if participation > 0 else 0


def _check_sites_keyed(
    name: str, mapping: Mapping[str, Any] | None, sites: Mapping[str, int]
) -> None:
    if mapping is None:
        return
    unknown = sorted(set(mapping) - set(sites))
    if unknown:
        raise ValueError(f"{name} names unknown site(s) {unknown}; sites are {sorted(sites)}")


def _participation(value: float | Mapping[str, float], site: str) -> float:
    p = value.get(site, 1.0) if isinstance(value, Mapping) else value
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"participation for site '{site}' must be a float, got {p!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"participation for site '{site}' must be in [0, 1], got {p!r}")
    return float(p)


def plan_federation(
    *,
    sites: Mapping[str, int],
    rounds: int,
    local_epochs: int,
    batch_size: int,
    participation: float | Mapping[str, float] = 1.0,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    delta: float,
    accountant: str = "rdp",
    caps: Mapping[str, float] | None = None,
    prior_spend: Mapping[str, Sequence[Charge]] | None = None,
) -> FederationPlan:
    """Plan every site before a run: what noise it uses and when its own cap would stop it.

    Each site plans with its own Poisson sample rate (`plan_shape`: 1 / ceil(n / batch)).
    With participation p a site expects `expected_rounds(p, rounds)` rounds; a target
    epsilon is met over exactly those rounds on top of the site's prior spend (its store's
    history), so a site sampled more often than expected overshoots the target. The
    epsilon column runs to `rounds` joined rounds so that overshoot and the cap are visible.
    A site whose cap refuses a round within its expected rounds gets a warning.
    """
    if (target_epsilon is None) == (noise_multiplier is None):
        raise ValueError("give exactly one of target_epsilon and noise_multiplier")
    if not sites:
        raise ValueError("sites must name at least one site with its training-set size")
    _check_sites_keyed(
        "participation", participation if isinstance(participation, Mapping) else None, sites
    )
    _check_sites_keyed("caps", caps, sites)
    _check_sites_keyed("prior_spend", prior_spend, sites)
    training = TrainingConfig(rounds=rounds, local_epochs=local_epochs, batch_size=batch_size)
    privacy = PrivacyConfig(
        target_epsilon=target_epsilon,
        noise_multiplier=noise_multiplier,
        delta=delta,
        accountant=accountant,  # type: ignore[arg-type]  # checked by get_accountant below
    )
    rows = []
    for site, n_train in sites.items():
        if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
            raise ValueError(f"n_train for site '{site}' must be an integer >= 1, got {n_train!r}")
        p = _participation(participation, site)
        k = expected_rounds(p, rounds)
        cap = None if caps is None else caps.get(site)
        if cap is not None and not (cap > 0):
            raise ValueError(f"cap for site '{site}' must be > 0, got {cap!r}")
        prior = list(prior_spend.get(site, ())) if prior_spend else []
        rows.append(_plan_one(site, n_train, p, k, cap, prior, privacy, training))
    return FederationPlan(
        rounds=rounds,
        local_epochs=local_epochs,
        batch_size=batch_size,
        delta=delta,
        accountant=accountant,
        target_epsilon=target_epsilon,
        noise_multiplier=noise_multiplier,
        sites=tuple(rows),
    )


def _plan_one(
    site: str,
    n_train: int,
    p: float,
    k: int,
    cap: float | None,
    prior: list[Charge],
    privacy: PrivacyConfig,
    training: TrainingConfig,
) -> SiteRow:
    delta, accountant = privacy.delta, privacy.accountant
    prior_eps = epsilon_for(prior, delta=delta, accountant=accountant)
    q, steps, _ = plan_shape(training, n_train=n_train, rounds=max(k, 1))
    warnings: list[str] = []
    sigma: float | None = privacy.noise_multiplier
    if sigma is None:
        target = privacy.target_epsilon
        assert target is not None  # PrivacyConfig guarantees one of the two
        if k == 0:
            sigma = None
            warnings.append(f"site '{site}' has participation 0: it is not expected to join")
        else:
            # The target is this run's spend, as the site plans it (client/local_round.py);
            # what the site spent before only counts against its cap.
            sigma, _ = noise_for_target(
                target_epsilon=target,
                sample_rate=q,
                steps=steps * k,
                delta=delta,
                accountant=accountant,
            )
    # Consecutive rounds at one (noise, rate) are one charge of their summed steps: the same
    # mechanism, and the same history shape noise_for_target searched over.
    eps_rounds = (
        tuple(
            epsilon_for([*prior, Charge(sigma, q, steps * j)], delta=delta, accountant=accountant)
            for j in range(1, training.rounds + 1)
        )
        if sigma is not None
        else ()
    )
    cap_round = None
    if cap is not None:
        if prior_eps > cap:
            cap_round = 1
        else:
            cap_round = next((j for j, e in enumerate(eps_rounds, 1) if e > cap), None)
        if cap_round is not None and k > 0 and cap_round <= k:
            warnings.append(
                f"site '{site}': its cap max_epsilon={cap:g} refuses its joined round "
                f"{cap_round} of {k} expected (about federation round "
                f"{min(training.rounds, math.ceil(cap_round / p))}); it stops early with "
                f"epsilon {eps_rounds[cap_round - 2] if cap_round > 1 else prior_eps:.4g}. "
                "Fix: lower the target epsilon, fewer rounds or local epochs, or a higher cap"
            )
    return SiteRow(
        site=site,
        n_train=n_train,
        participation=p,
        expected_rounds=k,
        sample_rate=q,
        steps_per_round=steps,
        noise_multiplier=sigma,
        prior_epsilon=prior_eps,
        epsilon_after_round=eps_rounds,
        cap=cap,
        cap_round=cap_round,
        warnings=tuple(warnings),
    )


def _fmt(value: float | None, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else format(value, spec)


_HEADER = (
    "site",
    "n",
    "p",
    "exp.rds",
    "q",
    "steps/rd",
    "noise",
    "prior eps",
    "eps@exp",
    "eps@all",
    "cap",
    "cap round",
)


def _site_cells(row: SiteRow) -> tuple[str, ...]:
    eps_all = row.epsilon_after_round[-1] if row.epsilon_after_round else None
    return (
        row.site,
        str(row.n_train),
        f"{row.participation:.2f}",
        str(row.expected_rounds),
        f"{row.sample_rate:.4f}",
        str(row.steps_per_round),
        _fmt(row.noise_multiplier, ".4f"),
        _fmt(row.prior_epsilon),
        _fmt(row.expected_epsilon if row.noise_multiplier is not None else None),
        _fmt(eps_all),
        _fmt(row.cap, "g"),
        "-" if row.cap_round is None else str(row.cap_round),
    )


def _table_lines(plan: FederationPlan) -> list[str]:
    """The per-site table, fixed width: names left-aligned, figures right-aligned."""
    table = [_HEADER, *(_site_cells(row) for row in plan.sites)]
    widths = [max(len(r[i]) for r in table) for i in range(len(_HEADER))]
    lines = []
    for i, cells in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _trajectory_lines(plan: FederationPlan) -> list[str]:
    lines = ["", "epsilon after each joined round (| marks the expected rounds' end):"]
    for row in plan.sites:
        marks = [
            f"{_fmt(e, '.2f')}{' |' if j == row.expected_rounds else ''}"
            for j, e in enumerate(row.epsilon_after_round, 1)
        ]
        text = " ".join(marks) if marks else "-"
        lines.extend(
            textwrap.wrap(
                text, width=100, initial_indent=f"  {row.site}: ", subsequent_indent="    "
            )
        )
    return lines


def format_plan(plan: FederationPlan) -> str:
    """A fixed-width table, then each site's epsilon after each joined round, then warnings."""
    goal = (
        f"target epsilon {plan.target_epsilon:g}"
        if plan.target_epsilon is not None
        else f"noise multiplier {plan.noise_multiplier:g}"
    )
    lines = [
        f"privacy plan: {plan.rounds} rounds x {plan.local_epochs} local epoch(s), batch "
        f"{plan.batch_size}, {goal}, delta={plan.delta:g}, accountant '{plan.accountant}' "
        "(Poisson sampling, sample-level DP)",
        *_table_lines(plan),
        *_trajectory_lines(plan),
    ]
    if plan.client_level is not None:
        c = plan.client_level
        cap = "no cap" if c.max_epsilon is None else f"cap {c.max_epsilon:g}"
        lines.append("")
        lines.append(
            f"client-level DP ({c.mode}): noise multiplier {c.noise_multiplier:.4f} on the "
            f"sum of updates clipped to {c.clipping_norm:g}; epsilon "
            f"{c.epsilon(c.planned_rounds):.3f} at delta {c.delta:g} after {c.planned_rounds} "
            f"rounds ({cap}; every round counts, no amplification by sampling)"
        )
    if plan.warnings:
        lines.append("")
        lines.extend(f"warning: {w}" for w in plan.warnings)
    return "\n".join(lines)


def _json_number(value: float | None) -> float | str | None:
    return "inf" if value is not None and math.isinf(value) else value


def plan_to_json(plan: FederationPlan) -> dict[str, Any]:
    """Plain JSON-safe data (infinity as the string 'inf')."""
    return {
        "rounds": plan.rounds,
        "local_epochs": plan.local_epochs,
        "batch_size": plan.batch_size,
        "delta": plan.delta,
        "accountant": plan.accountant,
        "target_epsilon": plan.target_epsilon,
        "noise_multiplier": plan.noise_multiplier,
        "sampling": "poisson",
        "sites": [
            {
                "site": r.site,
                "n_train": r.n_train,
                "participation": r.participation,
                "expected_rounds": r.expected_rounds,
                "sample_rate": r.sample_rate,
                "steps_per_round": r.steps_per_round,
                "noise_multiplier": r.noise_multiplier,
                "prior_epsilon": _json_number(r.prior_epsilon),
                "epsilon_after_round": [_json_number(e) for e in r.epsilon_after_round],
                "cap": r.cap,
                "cap_round": r.cap_round,
                "warnings": list(r.warnings),
            }
            for r in plan.sites
        ],
        "client_level": plan.client_level.as_dict() if plan.client_level else None,
        "warnings": list(plan.warnings),
    }
