"""Reading a budget store: charges, pinned units, spend, refusals and releases (no writes)."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, select

from fedsafe.client.budget.records import Acknowledgement, ChargeRecord, Refusal
from fedsafe.client.budget.schema import (
    acks_table,
    charges_table,
    datasets_table,
    refusals_table,
    releases_table,
)
from fedsafe.common.errors import PrivacyError
from fedsafe.common.privacy.accountants import Charge, epsilon_for
from fedsafe.common.storage import transaction

__all__ = ["StoreReader", "row_charge"]


def row_charge(row: Any) -> Charge:
    return Charge(row.noise_multiplier, row.sample_rate, row.steps)


class StoreReader:
    """The read side of `BudgetStore`: every query runs in its own read transaction."""

    _engine: Engine

    def _transaction(self, *, write: bool) -> AbstractContextManager[Connection]:
        return transaction(self._engine, write=write)

    def _rows(self, conn: Connection, dataset_id: str, *, up_to: int | None = None) -> list[Any]:
        query = select(charges_table).where(charges_table.c.dataset_id == dataset_id)
        if up_to is not None:
            query = query.where(charges_table.c.id <= up_to)
        return list(conn.execute(query.order_by(charges_table.c.id)))

    def _pin(self, conn: Connection, dataset_id: str) -> Any:
        return conn.execute(
            select(datasets_table).where(datasets_table.c.dataset_id == dataset_id)
        ).first()

    def charges(self, dataset_id: str) -> list[ChargeRecord]:
        """Every stored charge on a data set, oldest first, with its run, round and status."""
        with self._transaction(write=False) as conn:
            return [
                ChargeRecord(
                    r.id,
                    r.dataset_id,
                    r.run_id,
                    r.round,
                    row_charge(r),
                    r.planned_steps,
                    r.delta,
                    r.accountant,
                    r.status,
                    r.purpose,
                    r.time,
                    r.completed_time,
                    r.kind,
                )
                for r in self._rows(conn, dataset_id)
            ]

    def history(self, dataset_id: str) -> list[Charge]:
        """All reserved and completed charges on a data set, in the order they were made."""
        return [record.charge for record in self.charges(dataset_id)]

    def unit(self, dataset_id: str) -> tuple[float, str] | None:
        """The (delta, accountant) pinned at the data set's first charge, None before it."""
        with self._transaction(write=False) as conn:
            pin = self._pin(conn, dataset_id)
        return None if pin is None else (pin.delta, pin.accountant)

    def fingerprint(self, dataset_id: str) -> str | None:
        with self._transaction(write=False) as conn:
            pin = self._pin(conn, dataset_id)
        return None if pin is None else pin.fingerprint

    def spent(self, dataset_id: str, *, delta: float, accountant: str) -> float:
        """Epsilon of the data set's whole history, composed, in its pinned unit only."""
        pinned = self.unit(dataset_id)
        if pinned is not None and pinned != (delta, accountant):
            raise PrivacyError(
                f"data set '{dataset_id}' is accounted at delta={pinned[0]:g} with "
                f"'{pinned[1]}'; asked for delta={delta:g} with '{accountant}'"
            )
        return epsilon_for(self.history(dataset_id), delta=delta, accountant=accountant)

    def refusals(self, dataset_id: str | None = None) -> list[Refusal]:
        """Refused rounds, oldest first; all data sets when `dataset_id` is None."""
        query = select(refusals_table).order_by(refusals_table.c.id)
        if dataset_id is not None:
            query = query.where(refusals_table.c.dataset_id == dataset_id)
        with self._transaction(write=False) as conn:
            return [
                Refusal(
                    r.dataset_id,
                    r.run_id,
                    r.round,
                    r.reason,
                    r.spent_epsilon,
                    r.round_epsilon_cost,
                    r.cap,
                    r.message,
                    r.time,
                )
                for r in conn.execute(query)
            ]

    def acknowledgements(self) -> list[Acknowledgement]:
        with self._transaction(write=False) as conn:
            return [
                Acknowledgement(a.id, a.time, a.kind, a.dataset_id, json.loads(a.detail), a.reason)
                for a in conn.execute(select(acks_table).order_by(acks_table.c.id))
            ]

    def releases(self, dataset_id: str) -> list[dict[str, Any]]:
        """What left besides DP updates (evaluations), with the policy mode it left under."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(releases_table)
                .where(releases_table.c.dataset_id == dataset_id)
                .order_by(releases_table.c.id)
            )
            return [
                {
                    "run_id": r.run_id,
                    "round": r.round,
                    "kind": r.kind,
                    "mode": r.mode,
                    "model_digest": r.model_digest,
                    "released": json.loads(r.released),
                    "time": r.time,
                }
                for r in rows
            ]
