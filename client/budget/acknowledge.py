"""An admin's recorded decisions: accept a new or changed store, or changed rows of a data set."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select, update

from fedsafe.client.budget.anchor import StoreAnchor, detail_json, state_digest
from fedsafe.client.budget.overlap import put_records
from fedsafe.client.budget.records import BudgetStoreError, StoreIntegrityError
from fedsafe.client.budget.schema import (
    acks_table,
    charges_table,
    datasets_table,
    migrate,
    open_engine,
    store_id,
)
from fedsafe.client.budget.store import BudgetStore

__all__ = ["acknowledge_store", "acknowledge_data"]


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise BudgetStoreError("an acknowledgement needs a reason (who decided, and why)")
    return reason.strip()


def acknowledge_store(path: Path, anchor: StoreAnchor, *, reason: str) -> dict[str, object]:
    """Accept the store at `path` as it is now (created if missing), on the record.

    What the old head vouched for (store id, charge count) is written into the new store's
    acknowledgements, so the spend that was lost stays visible to every later report.
    """
    reason = _reason(reason)
    try:
        old = anchor.read()
        previous: dict[str, object] = (
            {"previous_head": "none"}
            if old is None
            else {
                "previous_store_id": old.store_id,
                "previous_charges": old.charges,
                "previous_digest": old.digest,
            }
        )
    except StoreIntegrityError:
        previous = {"previous_head": "did not verify with the site's key"}
    engine = open_engine(Path(path), create=True)
    try:
        with engine.connect() as conn:
            conn.execution_options(fedsafe_write=True)
            with conn.begin():
                charges = int(
                    conn.execute(select(func.count()).select_from(charges_table)).scalar_one()
                )
                detail = {**previous, "store": str(Path(path).resolve()), "charges": charges}
                conn.execute(
                    insert(acks_table).values(
                        time=datetime.now(UTC).isoformat(timespec="microseconds"),
                        kind="store",
                        dataset_id=None,
                        detail=detail_json(detail),
                        reason=reason,
                    )
                )
            with conn.begin():
                anchor.write(
                    store=store_id(conn),
                    digest=state_digest(conn),
                    pending=None,
                    charges=charges,
                )
    finally:
        engine.dispose()
    return detail


def acknowledge_data(
    store: BudgetStore,
    *,
    dataset_id: str,
    fingerprint: str,
    reason: str,
    records: np.ndarray | None = None,
) -> dict[str, object]:
    """Accept new rows under `dataset_id`: the data set keeps its whole history (never reset).

    With `records` (the new rows' content hashes) they join the data set's record set, which
    keeps the rows it held before too: those have spent this budget whatever happens next.
    """
    reason = _reason(reason)
    with store._write() as conn:
        pin = store._pin(conn, dataset_id)
        if pin is None:
            raise BudgetStoreError(f"no data set '{dataset_id}' in this store to acknowledge")
        if records is not None:
            migrate(
                conn, store._path
            )  # a version 2 store gains its records table (a no-op on version 3)
            put_records(conn, dataset_id, records)
        detail = {"previous_fingerprint": pin.fingerprint, "fingerprint": fingerprint}
        conn.execute(
            update(datasets_table)
            .where(datasets_table.c.dataset_id == dataset_id)
            .values(fingerprint=fingerprint)
        )
        conn.execute(
            insert(acks_table).values(
                time=store._now(None),
                kind="data",
                dataset_id=dataset_id,
                detail=detail_json(detail),
                reason=reason,
            )
        )
    return detail
