"""Per data set and per run summaries of a budget store, in the data set's pinned unit."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import func, select

from fedsafe.client.budget.records import DatasetSummary, RunSummary
from fedsafe.client.budget.schema import charges_table, datasets_table, refusals_table
from fedsafe.common.privacy.accountants import Charge, epsilon_for

__all__ = ["SummariesMixin"]


def _charge(row: Any) -> Charge:
    return Charge(row.noise_multiplier, row.sample_rate, row.steps)


class SummariesMixin:
    """Read-only views for `fedsafe site budget` and the site's report."""

    def datasets(self) -> list[DatasetSummary]:
        """One summary per data set that has charges or refusals, in order of first use."""
        with self._transaction(write=False) as conn:  # type: ignore[attr-defined]
            ids = [r[0] for r in conn.execute(select(charges_table.c.dataset_id))]
            ids += [r[0] for r in conn.execute(select(refusals_table.c.dataset_id))]
            pins = {p.dataset_id: p for p in conn.execute(select(datasets_table))}
        out = []
        for dataset_id in dict.fromkeys(ids):
            records = self.charges(dataset_id)  # type: ignore[attr-defined]
            runs = self.runs(dataset_id)
            pin = pins.get(dataset_id)
            eps = (
                epsilon_for([r.charge for r in records], delta=pin.delta, accountant=pin.accountant)
                if records and pin is not None
                else 0.0
            )
            out.append(
                DatasetSummary(
                    dataset_id=dataset_id,
                    runs=len(runs),
                    rounds=sum(r.kind == "train" for r in records),
                    steps=sum(r.charge.steps for r in records if r.kind == "train"),
                    reserved=sum(r.status == "reserved" for r in records),
                    refusals=sum(run.refusals for run in runs),
                    epsilon=eps,
                    delta=pin.delta if pin is not None else None,
                    accountant=pin.accountant if pin is not None else None,
                    fingerprint=pin.fingerprint if pin is not None else None,
                    nonprivate_runs=len({r.run_id for r in records if r.kind == "nonprivate"}),
                )
            )
        return out

    def runs(
        self, dataset_id: str, *, delta: float | None = None, accountant: str | None = None
    ) -> list[RunSummary]:
        """Per run on a data set: rounds, steps, refusals and the data set's epsilon after it.

        "Epsilon after a run" composes every charge up to that run's last one, whichever run
        made it, in the data set's pinned unit unless `delta`/`accountant` name another.
        """
        with self._transaction(write=False) as conn:  # type: ignore[attr-defined]
            rows = self._rows(conn, dataset_id)  # type: ignore[attr-defined]
            pin = self._pin(conn, dataset_id)  # type: ignore[attr-defined]
            refused = list(
                conn.execute(
                    select(
                        refusals_table.c.run_id,
                        func.count(),
                        func.max(refusals_table.c.after_charge_id),
                    )
                    .where(refusals_table.c.dataset_id == dataset_id)
                    .group_by(refusals_table.c.run_id)
                )
            )
        refusal_count = {run: n for run, n, _ in refused}
        # Where each run sits in the history: its last charge, or for a run that was only
        # refused, the last charge that existed when it was refused.
        last_id: dict[str, int] = {run: after for run, _, after in refused}
        first_pos: dict[str, float] = {run: after + 0.5 for run, _, after in refused}
        for r in rows:
            last_id[r.run_id] = r.id
            first_pos[r.run_id] = min(first_pos.get(r.run_id, math.inf), r.id)
        out = []
        for run in sorted(last_id, key=lambda k: first_pos[k]):
            mine = [r for r in rows if r.run_id == run]
            prefix = [_charge(r) for r in rows if r.id <= last_id[run]]
            unit_delta = delta if delta is not None else (pin.delta if pin else None)
            unit_accountant = (
                accountant if accountant is not None else (pin.accountant if pin else None)
            )
            eps = (
                epsilon_for(prefix, delta=unit_delta, accountant=unit_accountant)
                if prefix and unit_delta is not None and unit_accountant is not None
                else 0.0
            )
            out.append(
                RunSummary(
                    dataset_id=dataset_id,
                    run_id=run,
                    rounds=sum(r.kind == "train" for r in mine),
                    steps=sum(r.steps for r in mine if r.kind == "train"),
                    reserved=sum(r.status == "reserved" for r in mine),
                    refusals=refusal_count.get(run, 0),
                    epsilon_after=eps,
                )
            )
        return out
