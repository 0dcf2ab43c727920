"""A site's own persistent privacy budget: every charge on a data set, across runs, in SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy import exc as sa_exc

from fedsafe.client.budget.anchor import StoreAnchor
from fedsafe.client.budget.judge import judge_charge, replay_differences
from fedsafe.client.budget.overlap import has_records, put_records
from fedsafe.client.budget.pins import pin_refusal
from fedsafe.client.budget.reading import StoreReader, row_charge
from fedsafe.client.budget.records import (
    BudgetStoreError,
    Kind,
    PolicyRefusedError,
    Reservation,
    RoundRefusedError,
    StoreIntegrityError,
)
from fedsafe.client.budget.schema import (
    SCHEMA_VERSION,
    charges_table,
    datasets_table,
    migrate,
    open_engine,
    refusals_table,
    schema_version,
)
from fedsafe.client.budget.summaries import SummariesMixin
from fedsafe.client.policy import SitePolicy
from fedsafe.common.errors import PrivacyError
from fedsafe.common.privacy.accountants import Charge, epsilon_for

__all__ = ["BudgetStore", "NONPRIVATE_CHARGE"]

# A release without DP: the accountant turns noise 0 into epsilon infinity, forever after.
NONPRIVATE_CHARGE = Charge(0.0, 1.0, 1)


def _format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError(f"at_time must be timezone-aware (UTC), got naive {at!r}")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _check_ids(dataset_id: object, run_id: object, round: object) -> None:
    for name, value in (("dataset_id", dataset_id), ("run_id", run_id)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        if not value:
            raise ValueError(f"{name} must be a non-empty string")
    if isinstance(round, bool) or not isinstance(round, int):
        raise TypeError(f"round must be an int, got {type(round).__name__}")
    if round < 0:
        raise ValueError(f"round must be >= 0, got {round}")


def _binding_text(binding: dict[str, Any] | None) -> str | None:
    return None if binding is None else json.dumps(binding, sort_keys=True, separators=(",", ":"))


class BudgetStore(StoreReader, SummariesMixin):
    """The site's privacy budget; the store is the state (no state_dict needed).

    Written only by the site: the server never sees the file. Every charge composes into the
    spend of its data set, whichever run made it, so a new run cannot start from zero. With an
    `anchor` (every real use), the store is checked against the site's signed head on open and
    re-signed on every write.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        path: Path | None = None,
        anchor: StoreAnchor | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._engine = engine
        self._path = path or Path("<memory>")
        self._anchor = anchor
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        create: bool = True,
        anchor: StoreAnchor | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> BudgetStore:
        """Open the store at `path` (made if missing, with `create`), checked against `anchor`."""
        engine = open_engine(Path(path), create=create)
        store = cls(engine, path=Path(path), anchor=anchor, clock=clock)
        try:  # one transaction: the head's check and the version the store is at
            with store._transaction(write=anchor is not None) as conn:
                if anchor is not None:
                    anchor.check(conn, store._path)
                current = schema_version(conn) == str(SCHEMA_VERSION)
        except BudgetStoreError:
            engine.dispose()
            raise
        except sa_exc.SQLAlchemyError as err:
            engine.dispose()
            raise StoreIntegrityError(f"budget store {path} cannot be read: {err}") from err
        if create and not current:  # a writer (the site) migrates an older store under its head
            with store._write() as conn:
                migrate(conn, store._path)
        return store

    def close(self) -> None:
        self._engine.dispose()  # the engine (its compiled statements) stays for the next open

    def __enter__(self) -> BudgetStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that keeps the signed head in step (two-phase, see anchor)."""
        anchor = self._anchor
        with self._engine.connect() as conn:
            conn.execution_options(fedsafe_write=True)
            written = None
            with conn.begin():
                head = anchor.begin_write(conn, self._path) if anchor else None
                yield conn
                if anchor is not None and head is not None:
                    written = anchor.pending(conn, head.store_id, head)
            if anchor is not None and written is not None:
                anchor.settle(written)

    def _now(self, at_time: datetime | None) -> str:
        return _format_time(at_time if at_time is not None else self._clock())

    # --- reserving and completing ---------------------------------------------------------

    def _refuse(self, conn: Connection, refusal: RoundRefusedError, time: str) -> None:
        rows = self._rows(conn, refusal.dataset_id)
        conn.execute(
            insert(refusals_table).values(
                dataset_id=refusal.dataset_id,
                run_id=refusal.run_id,
                round=refusal.round,
                reason=refusal.reason,
                spent_epsilon=refusal.spent_epsilon,
                round_epsilon_cost=refusal.round_epsilon_cost,
                cap=refusal.cap,
                message=str(refusal),
                after_charge_id=rows[-1].id if rows else 0,
                time=time,
            )
        )

    def reserve(
        self,
        *,
        dataset_id: str,
        run_id: str,
        round: int,
        charge: Charge,
        policy: SitePolicy,
        purpose: str | None,
        fingerprint: str | None = None,
        records: np.ndarray | None = None,
        binding: dict[str, Any] | None = None,
        kind: Kind = "train",
        at_time: datetime | None = None,
    ) -> Reservation:
        """Charge a round's planned steps before training, or refuse it.

        Check and write happen in one BEGIN IMMEDIATE transaction, so two processes on the
        same store cannot both pass the cap. The full planned steps are charged up front: a
        crash mid-round leaves the store over-counting, never under-counting. The first charge
        pins the data set's unit (delta, accountant), fingerprint and `records` (the rows'
        content hashes: a new data set sharing any of them with another is refused). A round
        already charged (resumed or replayed) is not charged again: its reservation comes back
        with `replayed=True` if asked with exactly the bound parameters (noise, rate, steps,
        delta, accountant, `binding`), and is refused naming what differs otherwise.
        """
        _check_ids(dataset_id, run_id, round)
        if not isinstance(charge, Charge):
            raise TypeError(f"charge must be a Charge, got {type(charge).__name__}")
        if not isinstance(policy, SitePolicy):
            raise TypeError(f"policy must be a SitePolicy, got {type(policy).__name__}")
        time = self._now(at_time)
        refusal: RoundRefusedError | None
        with self._write() as conn:
            ids: dict[str, Any] = {"dataset_id": dataset_id, "run_id": run_id, "round": round}
            replayed, refusal = self._replay(conn, kind, charge, policy, binding, ids)
            if replayed is not None:
                return replayed
            if refusal is None:
                refusal = pin_refusal(
                    conn, policy=policy, fingerprint=fingerprint, records=records, **ids
                )
            if refusal is None:
                history = [row_charge(r) for r in self._rows(conn, dataset_id)]
                refusal = judge_charge(
                    history,
                    charge=charge,
                    policy=policy,
                    purpose=purpose,
                    check_noise_floor=kind == "train",
                    **ids,
                )
            if refusal is None:
                return self._insert(
                    conn,
                    charge=charge,
                    policy=policy,
                    purpose=purpose,
                    fingerprint=fingerprint,
                    records=records,
                    binding=binding,
                    kind=kind,
                    time=time,
                    **ids,
                )
            self._refuse(conn, refusal, time)
        # Raised after the commit: the refusal row is part of the site's record.
        raise refusal

    def _replay(
        self,
        conn: Connection,
        kind: Kind,
        charge: Charge,
        policy: SitePolicy,
        binding: dict[str, Any] | None,
        ids: dict[str, Any],
    ) -> tuple[Reservation | None, PolicyRefusedError | None]:
        """A round charged before: its reservation if asked exactly as bound, else a refusal."""
        existing = conn.execute(
            select(charges_table).where(
                charges_table.c.dataset_id == ids["dataset_id"],
                charges_table.c.run_id == ids["run_id"],
                charges_table.c.round == ids["round"],
                charges_table.c.kind == kind,
            )
        ).first()
        if existing is None:
            return None, None
        differs = replay_differences(existing, charge, policy, binding)
        if not differs:
            return self._reservation(conn, existing, replayed=True), None
        return None, PolicyRefusedError(
            f"site refused a replay of dataset '{ids['dataset_id']}', run '{ids['run_id']}', "
            f"round {ids['round']}: it was reserved with other parameters "
            f"({'; '.join(differs)}). A replayed round trains only as reserved",
            reason="replay",
            cap=policy.max_epsilon,
            **ids,
        )

    def _insert(
        self,
        conn: Connection,
        *,
        dataset_id: str,
        run_id: str,
        round: int,
        charge: Charge,
        policy: SitePolicy,
        purpose: str | None,
        fingerprint: str | None,
        binding: dict[str, Any] | None,
        kind: Kind,
        time: str,
        records: np.ndarray | None = None,
        status: str = "reserved",
    ) -> Reservation:
        pin = self._pin(conn, dataset_id)
        if records is not None and not has_records(conn, dataset_id):
            put_records(conn, dataset_id, records)
        if pin is None:
            conn.execute(
                insert(datasets_table).values(
                    dataset_id=dataset_id,
                    fingerprint=fingerprint or None,
                    delta=policy.delta,
                    accountant=policy.accountant,
                    time=time,
                )
            )
        elif pin.fingerprint is None and fingerprint:
            conn.execute(
                update(datasets_table)
                .where(datasets_table.c.dataset_id == dataset_id)
                .values(fingerprint=fingerprint)
            )
        new_id = conn.execute(
            insert(charges_table).values(
                dataset_id=dataset_id,
                run_id=run_id,
                round=round,
                kind=kind,
                noise_multiplier=float(charge.noise_multiplier),
                sample_rate=float(charge.sample_rate),
                steps=charge.steps,
                planned_steps=charge.steps,
                delta=policy.delta,
                accountant=policy.accountant,
                status=status,
                purpose=purpose,
                binding=_binding_text(binding),
                time=time,
                completed_time=time if status == "completed" else None,
            )
        ).inserted_primary_key
        assert new_id is not None  # SQLite always returns the new row id
        row = conn.execute(select(charges_table).where(charges_table.c.id == new_id[0])).one()
        return self._reservation(conn, row, replayed=False)

    def _reservation(self, conn: Connection, row: Any, *, replayed: bool) -> Reservation:
        history = [row_charge(r) for r in self._rows(conn, row.dataset_id, up_to=row.id)]
        eps = epsilon_for(history, delta=row.delta, accountant=row.accountant)
        return Reservation(
            id=row.id,
            dataset_id=row.dataset_id,
            run_id=row.run_id,
            round=row.round,
            charge=row_charge(row),
            planned_steps=row.planned_steps,
            delta=row.delta,
            accountant=row.accountant,
            status=row.status,
            epsilon_after=eps,
            replayed=replayed,
            kind=row.kind,
            binding=None if row.binding is None else json.loads(row.binding),
        )

    def complete(
        self, reservation: Reservation, *, steps_taken: int, at_time: datetime | None = None
    ) -> Reservation:
        """Mark a reserved round completed with the steps it really ran.

        Fewer steps than planned lower the stored steps: privacy composes over what ran.
        More steps than planned is a bug in the caller; the real steps are recorded anyway
        (the store must never under-count) and PrivacyError is raised. Completing twice with
        the same steps is a no-op; with different steps it is an error.
        """
        if not isinstance(reservation, Reservation):
            raise TypeError(f"reservation must be a Reservation, got {type(reservation).__name__}")
        if isinstance(steps_taken, bool) or not isinstance(steps_taken, int):
            raise TypeError(f"steps_taken must be an int, got {type(steps_taken).__name__}")
        if steps_taken < 0:
            raise ValueError(f"steps_taken must be >= 0, got {steps_taken}")
        time = self._now(at_time)
        with self._write() as conn:
            row = conn.execute(
                select(charges_table).where(charges_table.c.id == reservation.id)
            ).first()
            if row is None or (row.dataset_id, row.run_id, row.round) != (
                reservation.dataset_id,
                reservation.run_id,
                reservation.round,
            ):
                raise BudgetStoreError(
                    f"no reservation {reservation.id} for dataset '{reservation.dataset_id}', "
                    f"run '{reservation.run_id}', round {reservation.round} in this store"
                )
            if row.status == "completed":
                if row.steps != steps_taken:
                    raise BudgetStoreError(
                        f"round {row.round} of run '{row.run_id}' on '{row.dataset_id}' was "
                        f"already completed with {row.steps} steps, not {steps_taken}"
                    )
                return self._reservation(conn, row, replayed=reservation.replayed)
            overrun = steps_taken > row.planned_steps
            steps = steps_taken if overrun else min(row.steps, steps_taken)
            conn.execute(
                update(charges_table)
                .where(charges_table.c.id == row.id)
                .values(status="completed", steps=steps, completed_time=time)
            )
            row = conn.execute(select(charges_table).where(charges_table.c.id == row.id)).one()
            done = self._reservation(conn, row, replayed=reservation.replayed)
        if overrun:
            raise PrivacyError(
                f"dataset '{row.dataset_id}', run '{row.run_id}', round {row.round}: the site "
                f"ran {steps_taken} steps but reserved {row.planned_steps}; the real steps were "
                f"recorded (epsilon now {done.epsilon_after:.4g}). This is a bug in the caller"
            )
        return done
