"""What a data set is pinned to at its first charge, and the refusals when a round differs:
another unit, other rows under its name, its rows (or some of them) under another name."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from fedsafe.client.budget.judge import data_refusal, unit_refusal
from fedsafe.client.budget.overlap import shared_records, unrecorded_datasets
from fedsafe.client.budget.records import PolicyRefusedError
from fedsafe.client.budget.schema import datasets_table
from fedsafe.client.policy import SitePolicy

__all__ = ["pin_refusal", "overlap_refusal"]


def pin_refusal(
    conn: Connection,
    *,
    dataset_id: str,
    run_id: str,
    round: int,
    policy: SitePolicy,
    fingerprint: str | None,
    records: np.ndarray | None,
) -> PolicyRefusedError | None:
    """Refuse another unit, other rows under this name, or these (or some of these) rows
    under another name."""
    ids: dict[str, Any] = {"dataset_id": dataset_id, "run_id": run_id, "round": round}
    pin = conn.execute(
        select(datasets_table).where(datasets_table.c.dataset_id == dataset_id)
    ).first()
    if pin is not None:
        wrong_unit = unit_refusal(pin, policy, **ids)
        if wrong_unit is not None:
            return wrong_unit
        if fingerprint and pin.fingerprint and fingerprint != pin.fingerprint:
            return data_refusal(
                f"the rows of '{dataset_id}' changed (fingerprint {fingerprint[:16]} ≠ "
                f"pinned {pin.fingerprint[:16]}); records seen before may be among them. "
                "Fix: if this is the same data set grown or corrected, record it with "
                "`fedsafe site acknowledge --data` (the history carries over)",
                policy,
                **ids,
            )
    elif fingerprint:
        other = conn.execute(
            select(datasets_table).where(datasets_table.c.fingerprint == fingerprint)
        ).first()
        if other is not None:
            return data_refusal(
                f"these rows are already accounted as data set '{other.dataset_id}' "
                f"(fingerprint {fingerprint[:16]}); a new name does not start a new budget. "
                f"Fix: use dataset_id '{other.dataset_id}'",
                policy,
                **ids,
            )
        if records is not None:
            unrecorded = unrecorded_datasets(conn)
            if unrecorded:
                return data_refusal(
                    f"data set '{unrecorded[0]}' was accounted before this store kept each "
                    "data set's records, so a new data set cannot be checked against its rows. "
                    f"Fix: run `fedsafe site acknowledge --data` with the site.yaml naming "
                    f"'{unrecorded[0]}' (its rows are then recorded), then start this one",
                    policy,
                    **ids,
                )
    return None if records is None else overlap_refusal(conn, records, policy, **ids)


def overlap_refusal(
    conn: Connection,
    records: np.ndarray,
    policy: SitePolicy,
    *,
    dataset_id: str,
    run_id: str,
    round: int,
) -> PolicyRefusedError | None:
    """Refuse records that another data set of this store already holds (and spent on)."""
    shared = shared_records(conn, records, exclude=dataset_id)
    if not shared:
        return None
    named = ", ".join(f"'{d}' ({n} records)" for d, n in shared)
    return data_refusal(
        f"{sum(n for _, n in shared)} of these {len(np.unique(records))} records are "
        f"already accounted in data set {named}; they have spent that budget, and a new "
        "name (or a row added or dropped) does not start a new one. Fix: use dataset_id "
        f"'{shared[0][0]}' and record the changed rows with `fedsafe site acknowledge "
        "--data` (the history carries over)",
        policy,
        dataset_id=dataset_id,
        run_id=run_id,
        round=round,
    )
