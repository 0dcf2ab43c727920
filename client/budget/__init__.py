"""A site's own persistent, tamper-evident privacy budget (SQLite + a head signed by the site)."""

from fedsafe.client.budget.acknowledge import acknowledge_data, acknowledge_store
from fedsafe.client.budget.anchor import StoreAnchor
from fedsafe.client.budget.lock import round_lock
from fedsafe.client.budget.records import (
    Acknowledgement,
    BudgetStoreError,
    ChargeRecord,
    DatasetSummary,
    PolicyRefusedError,
    Refusal,
    RefusalReason,
    Reservation,
    RoundRefusedError,
    RunSummary,
    StoreIntegrityError,
)
from fedsafe.client.budget.releases import record_evaluation, record_nonprivate
from fedsafe.client.budget.schema import SCHEMA_VERSION
from fedsafe.client.budget.store import NONPRIVATE_CHARGE, BudgetStore

__all__ = [
    "Acknowledgement",
    "BudgetStore",
    "BudgetStoreError",
    "ChargeRecord",
    "DatasetSummary",
    "NONPRIVATE_CHARGE",
    "PolicyRefusedError",
    "Refusal",
    "RefusalReason",
    "Reservation",
    "RoundRefusedError",
    "RunSummary",
    "SCHEMA_VERSION",
    "StoreAnchor",
    "StoreIntegrityError",
    "acknowledge_data",
    "acknowledge_store",
    "record_evaluation",
    "record_nonprivate",
    "round_lock",
]
