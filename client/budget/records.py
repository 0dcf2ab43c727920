"""What the budget store returns and raises: reservations, charge rows, refusals, summaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fedsafe.common.errors import BudgetExceededError, FedsafeError
from fedsafe.common.privacy.accountants import Charge

__all__ = [
    "BudgetStoreError",
    "StoreIntegrityError",
    "RoundRefusedError",
    "PolicyRefusedError",
    "RefusalReason",
    "Kind",
    "Status",
    "Reservation",
    "ChargeRecord",
    "Refusal",
    "RunSummary",
    "DatasetSummary",
    "Acknowledgement",
]

RefusalReason = Literal[
    "budget", "noise", "purpose", "accountant", "unit", "data", "replay", "policy"
]
Kind = Literal["train", "evaluate", "nonprivate"]
Status = Literal["reserved", "completed"]


class BudgetStoreError(FedsafeError):
    """The budget store is missing, unreadable, or was asked something inconsistent."""


class StoreIntegrityError(BudgetStoreError):
    """The store does not match the site's signed head: edited, rewound, deleted or replaced.

    The site refuses to train until its admin acts (`fedsafe site acknowledge`).
    """


class RoundRefusedError(BudgetExceededError):
    """The site refused a round; carries the numbers the message states."""

    def __init__(
        self,
        message: str,
        *,
        reason: RefusalReason,
        dataset_id: str,
        run_id: str,
        round: int,
        spent_epsilon: float | None = None,
        round_epsilon_cost: float | None = None,
        cap: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.dataset_id, self.run_id, self.round = dataset_id, run_id, round
        self.spent_epsilon, self.round_epsilon_cost, self.cap = (
            spent_epsilon,
            round_epsilon_cost,
            cap,
        )


class PolicyRefusedError(RoundRefusedError):
    """Refused by a rule other than the cap: too little noise, a purpose not allowed, another
    unit or data set than the one pinned, a replay with other parameters, or an accountant
    that could not compute the spend."""


@dataclass(frozen=True)
class Reservation:
    """A round's charge as the store holds it; `replayed` when the round was already charged."""

    id: int
    dataset_id: str
    run_id: str
    round: int
    charge: Charge
    planned_steps: int
    delta: float
    accountant: str
    status: Status
    epsilon_after: float
    replayed: bool = False
    kind: Kind = "train"
    binding: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChargeRecord:
    """One stored charge row, for audits and summaries."""

    id: int
    dataset_id: str
    run_id: str
    round: int
    charge: Charge
    planned_steps: int
    delta: float
    accountant: str
    status: Status
    purpose: str | None
    time: str
    completed_time: str | None
    kind: Kind = "train"


@dataclass(frozen=True)
class Refusal:
    """One refused round, kept so a site can show what it declined and why."""

    dataset_id: str
    run_id: str
    round: int
    reason: RefusalReason
    spent_epsilon: float | None
    round_epsilon_cost: float | None
    cap: float
    message: str
    time: str


@dataclass(frozen=True)
class RunSummary:
    """One run on one dataset: its rounds and steps, and the dataset's epsilon once it ended."""

    dataset_id: str
    run_id: str
    rounds: int
    steps: int
    reserved: int
    refusals: int
    epsilon_after: float


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset's whole history, in its pinned unit (delta, accountant) and fingerprint."""

    dataset_id: str
    runs: int
    rounds: int
    steps: int
    reserved: int
    refusals: int
    epsilon: float
    delta: float | None
    accountant: str | None
    fingerprint: str | None = None
    nonprivate_runs: int = 0


@dataclass(frozen=True)
class Acknowledgement:
    """An admin's recorded decision to accept a new store or changed data."""

    id: int
    time: str
    kind: str
    dataset_id: str | None
    detail: dict[str, Any]
    reason: str
