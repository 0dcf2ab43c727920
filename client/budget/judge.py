"""The site's rules for a new charge: purpose, noise floor, cap, and the pinned unit and data."""

from __future__ import annotations

import math
from typing import Any

from fedsafe.client.budget.records import PolicyRefusedError, RoundRefusedError
from fedsafe.client.policy import SitePolicy
from fedsafe.common.errors import AccountantError
from fedsafe.common.privacy.accountants import Charge, epsilon_for

__all__ = ["judge_charge", "replay_differences", "unit_refusal", "data_refusal"]


def _where(dataset_id: str, run_id: str, round: int) -> str:
    return f"dataset '{dataset_id}', run '{run_id}', round {round}"


def judge_charge(
    history: list[Charge],
    *,
    dataset_id: str,
    run_id: str,
    round: int,
    charge: Charge,
    policy: SitePolicy,
    purpose: str | None,
    check_noise_floor: bool = True,
) -> RoundRefusedError | None:
    """The refusal this charge earns under `policy`, or None when it may be made."""
    where = _where(dataset_id, run_id, round)
    cap = policy.max_epsilon
    unit = f"delta={policy.delta:g}, accountant '{policy.accountant}'"
    try:
        spent = epsilon_for(history, delta=policy.delta, accountant=policy.accountant)
        after = epsilon_for([*history, charge], delta=policy.delta, accountant=policy.accountant)
    except AccountantError as err:
        return PolicyRefusedError(
            f"site refused {where}: the spend could not be computed ({err})",
            reason="accountant",
            dataset_id=dataset_id,
            run_id=run_id,
            round=round,
            cap=cap,
        )
    cost = math.inf if math.isinf(after) else after - spent
    numbers: dict[str, Any] = {
        "dataset_id": dataset_id,
        "run_id": run_id,
        "round": round,
        "spent_epsilon": spent,
        "round_epsilon_cost": cost,
        "cap": cap,
    }
    spend = (
        f"spent epsilon {spent:.4g}; this round (noise {charge.noise_multiplier:g}, "
        f"sample rate {charge.sample_rate:g}, {charge.steps} steps) would cost "
        f"{cost:.4g} more, reaching {after:.4g}; cap max_epsilon={cap:g} ({unit})"
    )
    if not policy.allows_purpose(purpose):
        return PolicyRefusedError(
            f"site refused {where}: purpose {purpose!r} is not allowed by the site policy "
            f"(allowed: {list(policy.allowed_purposes)}); {spend}. Fix: run for an "
            "allowed purpose, or add it to site_policy.allowed_purposes",
            reason="purpose",
            **numbers,
        )
    if check_noise_floor and charge.noise_multiplier < policy.min_noise_multiplier:
        return PolicyRefusedError(
            f"site refused {where}: noise multiplier {charge.noise_multiplier:g} is below "
            f"the site minimum min_noise_multiplier={policy.min_noise_multiplier:g}; "
            f"{spend}. Fix: plan with a larger noise multiplier (a lower target epsilon)",
            reason="noise",
            **numbers,
        )
    if after > cap:
        return RoundRefusedError(
            f"site refused {where}: privacy budget exceeded; {spend}. Fix: use more noise "
            "or fewer local steps per round, end the run, or raise site_policy.max_epsilon "
            "if the data owner agrees",
            reason="budget",
            **numbers,
        )
    return None


def replay_differences(
    row: Any, charge: Charge, policy: SitePolicy, binding: dict | None
) -> list[str]:
    """What a replay asks for that its reservation did not bind; empty when they agree."""
    stored_binding = None if row.binding is None else _loads(row.binding)
    pairs = [
        ("noise_multiplier", row.noise_multiplier, float(charge.noise_multiplier)),
        ("sample_rate", row.sample_rate, float(charge.sample_rate)),
        ("steps", row.planned_steps, charge.steps),
        ("delta", row.delta, policy.delta),
        ("accountant", row.accountant, policy.accountant),
    ]
    out = [f"{name} reserved {old!r}, asked {new!r}" for name, old, new in pairs if old != new]
    if binding is not None and stored_binding is not None:
        for key in sorted(set(binding) | set(stored_binding)):
            if binding.get(key) != stored_binding.get(key):
                out.append(
                    f"{key} reserved {stored_binding.get(key)!r}, asked {binding.get(key)!r}"
                )
    return out


def _loads(text: str) -> dict:
    import json

    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def unit_refusal(
    pinned: Any, policy: SitePolicy, *, dataset_id: str, run_id: str, round: int
) -> PolicyRefusedError | None:
    """A charge in another (delta, accountant) than the one pinned at the first charge."""
    if (pinned.delta, pinned.accountant) == (policy.delta, policy.accountant):
        return None
    return PolicyRefusedError(
        f"site refused {_where(dataset_id, run_id, round)}: this data set's budget is pinned to "
        f"delta={pinned.delta:g} with accountant '{pinned.accountant}' since its first charge; "
        f"the round asks for delta={policy.delta:g} with '{policy.accountant}'. Spends in "
        "different units cannot be compared against one cap. Fix: run at the pinned unit",
        reason="unit",
        dataset_id=dataset_id,
        run_id=run_id,
        round=round,
        cap=policy.max_epsilon,
    )


def data_refusal(
    message: str, policy: SitePolicy, *, dataset_id: str, run_id: str, round: int
) -> PolicyRefusedError:
    return PolicyRefusedError(
        f"site refused {_where(dataset_id, run_id, round)}: {message}",
        reason="data",
        dataset_id=dataset_id,
        run_id=run_id,
        round=round,
        cap=policy.max_epsilon,
    )
