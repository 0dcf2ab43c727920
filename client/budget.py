"""A site's own persistent privacy budget: every charge on a dataset, across runs, in SQLite."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import exc as sa_exc

from client.policy import SitePolicy
from common.errors import AccountantError, BudgetExceededError, FedsafeError, PrivacyError
from common.files import private_file
from common.privacy.accountants import Charge, epsilon_for

__all__ = [
    "BudgetStore",
    "BudgetStoreError",
    "ChargeRecord",
    "DatasetSummary",
    "PolicyRefusedError",
    "Refusal",
    "RefusalReason",
    "Reservation",
    "RoundRefusedError",
    "RunSummary",
]

RefusalReason = Literal["budget", "noise", "purpose", "accountant"]
Status = Literal["reserved", "completed"]

_metadata = MetaData()
charges_table = Table(
    "budget_charges",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(200), nullable=False, index=True),
    Column("run_id", String(200), nullable=False),
    Column("round", Integer, nullable=False),
    Column("noise_multiplier", Float, nullable=False),
    Column("sample_rate", Float, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("planned_steps", Integer, nullable=False),
    Column("delta", Float, nullable=False),
    Column("accountant", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("purpose", String(200), nullable=True),
    Column("time", String(40), nullable=False),
    Column("completed_time", String(40), nullable=True),
    # The last guard against a double charge, should a writer ever bypass BEGIN IMMEDIATE.
    UniqueConstraint("dataset_id", "run_id", "round", name="uq_budget_charge_round"),
)
refusals_table = Table(
    "budget_refusals",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(200), nullable=False, index=True),
    Column("run_id", String(200), nullable=False),
    Column("round", Integer, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("spent_epsilon", Float, nullable=True),
    Column("round_epsilon_cost", Float, nullable=True),
    Column("cap", Float, nullable=False),
    Column("message", Text, nullable=False),
    # Charges that existed when the refusal happened: places it in the dataset's history.
    Column("after_charge_id", Integer, nullable=False),
    Column("time", String(40), nullable=False),
)


class BudgetStoreError(FedsafeError):
    """The budget store is missing, unreadable, or was asked something inconsistent."""


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
        spent_epsilon: float | None,
        round_epsilon_cost: float | None,
        cap: float,
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
    """Refused by a policy rule other than the cap: too little noise, a purpose not allowed,
    or an accountant that could not compute the spend."""


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
    """A dataset's whole history; `delta`/`accountant` are those of its latest charge."""

    dataset_id: str
    runs: int
    rounds: int
    steps: int
    reserved: int
    refusals: int
    epsilon: float
    delta: float | None
    accountant: str | None


def _format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError(f"at_time must be timezone-aware (UTC), got naive {at!r}")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's implicit BEGIN is deferred: two processes could both read the old spend and
    # both pass the cap. Writers take the write lock before reading, with BEGIN IMMEDIATE.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, not only a kill
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("budget_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


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


def _row_charge(row: Any) -> Charge:
    return Charge(row.noise_multiplier, row.sample_rate, row.steps)


def _row_record(row: Any) -> ChargeRecord:
    return ChargeRecord(
        row.id,
        row.dataset_id,
        row.run_id,
        row.round,
        _row_charge(row),
        row.planned_steps,
        row.delta,
        row.accountant,
        row.status,
        row.purpose,
        row.time,
        row.completed_time,
    )


class BudgetStore:
    """The site's privacy budget; the store is the state (no state_dict needed).

    Written only by the site: the server never sees the file. Every charge composes into
    the spend of its dataset, whichever run made it, so a new run cannot start from zero.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        create: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> BudgetStore:
        """Open the store at `path`; with `create`, make the directory and schema if missing.

        `create=False` is for readers (reports): a missing file is an error naming the path,
        so a typo never shows an empty, fresh budget.
        """
        path = Path(path)
        if not create and not path.is_file():
            raise BudgetStoreError(
                f"no budget store at {path}: the site creates it on its first private round; "
                "check the site config's budget store path"
            )
        if create:
            private_file(path)  # 0600: the charge history is the site's alone
        engine = create_engine(f"sqlite:///{path.resolve()}", connect_args={"timeout": 30})
        _configure_sqlite(engine)
        try:
            if create:
                _metadata.create_all(engine, checkfirst=True)
            else:
                names = set(inspect(engine).get_table_names())
                missing = {charges_table.name, refusals_table.name} - names
                if missing:
                    engine.dispose()
                    raise BudgetStoreError(
                        f"{path} is not a fedsafe budget store (missing tables {sorted(missing)})"
                    )
        except sa_exc.SQLAlchemyError as err:
            engine.dispose()
            raise BudgetStoreError(f"cannot open budget store at {path}: {err}") from err
        return cls(engine, clock=clock)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> BudgetStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(budget_write=write)
            with conn.begin():
                yield conn

    def _now(self, at_time: datetime | None) -> str:
        return _format_time(at_time if at_time is not None else self._clock())

    # --- reading -----------------------------------------------------------------------

    def _rows(self, conn: Connection, dataset_id: str, *, up_to: int | None = None) -> list[Any]:
        query = select(charges_table).where(charges_table.c.dataset_id == dataset_id)
        if up_to is not None:
            query = query.where(charges_table.c.id <= up_to)
        return list(conn.execute(query.order_by(charges_table.c.id)))

    def charges(self, dataset_id: str) -> list[ChargeRecord]:
        """Every stored charge on a dataset, oldest first, with its run, round and status."""
        with self._transaction(write=False) as conn:
            return [_row_record(r) for r in self._rows(conn, dataset_id)]

    def history(self, dataset_id: str) -> list[Charge]:
        """All reserved and completed charges on a dataset, in the order they were made."""
        return [record.charge for record in self.charges(dataset_id)]

    def spent(self, dataset_id: str, *, delta: float, accountant: str) -> float:
        """Epsilon of the dataset's whole history, across runs, composed (never summed)."""
        return epsilon_for(self.history(dataset_id), delta=delta, accountant=accountant)

    def refusals(self, dataset_id: str | None = None) -> list[Refusal]:
        """Refused rounds, oldest first; all datasets when `dataset_id` is None."""
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

    # --- reserving and completing ---------------------------------------------------------

    def reserve(
        self,
        *,
        dataset_id: str,
        run_id: str,
        round: int,
        charge: Charge,
        policy: SitePolicy,
        purpose: str | None,
        at_time: datetime | None = None,
    ) -> Reservation:
        """Charge a round's planned steps before training, or refuse it.

        Check and write happen in one BEGIN IMMEDIATE transaction, so two processes on the
        same store cannot both pass the cap. The full planned steps are charged up front:
        a crash mid-round leaves the store over-counting, never under-counting.
        A round already charged (a resumed or replayed round) is not charged again: its
        existing reservation comes back with `replayed=True`. If that reservation is
        'completed', its update was already produced; the caller must not train it again.
        """
        _check_ids(dataset_id, run_id, round)
        if not isinstance(charge, Charge):
            raise TypeError(f"charge must be a Charge, got {type(charge).__name__}")
        if not isinstance(policy, SitePolicy):
            raise TypeError(f"policy must be a SitePolicy, got {type(policy).__name__}")
        time = self._now(at_time)
        with self._transaction(write=True) as conn:
            existing = conn.execute(
                select(charges_table).where(
                    charges_table.c.dataset_id == dataset_id,
                    charges_table.c.run_id == run_id,
                    charges_table.c.round == round,
                )
            ).first()
            if existing is not None:
                return self._reservation(conn, existing, replayed=True)
            rows = self._rows(conn, dataset_id)
            refusal = self._judge(rows, dataset_id, run_id, round, charge, policy, purpose)
            if refusal is None:
                new_id = conn.execute(
                    insert(charges_table).values(
                        dataset_id=dataset_id,
                        run_id=run_id,
                        round=round,
                        noise_multiplier=float(charge.noise_multiplier),
                        sample_rate=float(charge.sample_rate),
                        steps=charge.steps,
                        planned_steps=charge.steps,
                        delta=policy.delta,
                        accountant=policy.accountant,
                        status="reserved",
                        purpose=purpose,
                        time=time,
                    )
                ).inserted_primary_key
                assert new_id is not None  # SQLite always returns the new row id
                row = conn.execute(
                    select(charges_table).where(charges_table.c.id == new_id[0])
                ).one()
                return self._reservation(conn, row, replayed=False)
            conn.execute(
                insert(refusals_table).values(
                    dataset_id=dataset_id,
                    run_id=run_id,
                    round=round,
                    reason=refusal.reason,
                    spent_epsilon=refusal.spent_epsilon,
                    round_epsilon_cost=refusal.round_epsilon_cost,
                    cap=refusal.cap,
                    message=str(refusal),
                    after_charge_id=rows[-1].id if rows else 0,
                    time=time,
                )
            )
        # Raised after the commit: the refusal row is part of the site's record.
        raise refusal

    def _judge(
        self,
        rows: list[Any],
        dataset_id: str,
        run_id: str,
        round: int,
        charge: Charge,
        policy: SitePolicy,
        purpose: str | None,
    ) -> RoundRefusedError | None:
        """The refusal this round earns under `policy`, or None when it may train."""
        where = f"dataset '{dataset_id}', run '{run_id}', round {round}"
        cap = policy.max_epsilon
        unit = f"delta={policy.delta:g}, accountant '{policy.accountant}'"
        history = [_row_charge(r) for r in rows]
        try:
            spent = epsilon_for(history, delta=policy.delta, accountant=policy.accountant)
            after = epsilon_for(
                [*history, charge], delta=policy.delta, accountant=policy.accountant
            )
        except AccountantError as err:
            return PolicyRefusedError(
                f"site refused {where}: the spend could not be computed ({err})",
                reason="accountant",
                dataset_id=dataset_id,
                run_id=run_id,
                round=round,
                spent_epsilon=None,
                round_epsilon_cost=None,
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
        if charge.noise_multiplier < policy.min_noise_multiplier:
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

    def _reservation(self, conn: Connection, row: Any, *, replayed: bool) -> Reservation:
        history = [_row_charge(r) for r in self._rows(conn, row.dataset_id, up_to=row.id)]
        eps = epsilon_for(history, delta=row.delta, accountant=row.accountant)
        return Reservation(
            id=row.id,
            dataset_id=row.dataset_id,
            run_id=row.run_id,
            round=row.round,
            charge=_row_charge(row),
            planned_steps=row.planned_steps,
            delta=row.delta,
            accountant=row.accountant,
            status=row.status,
            epsilon_after=eps,
            replayed=replayed,
        )

    def complete(
        self, reservation: Reservation, *, steps_taken: int, at_time: datetime | None = None
    ) -> Reservation:
        """Mark a reserved round completed with the steps it really ran.

        Fewer steps than planned (early stop, a short last epoch) lower the stored steps:
        the update the site released came from exactly `steps_taken` noisy steps, and
        privacy composes over what ran, so the reservation's surplus is given back. That
        is the only change a completion makes, and only once the steps are known.
        More steps than planned is a bug in the caller; the real steps are recorded anyway
        (the store must never under-count) and PrivacyError is raised. Completing twice
        with the same steps is a no-op; with different steps it is an error.
        """
        if not isinstance(reservation, Reservation):
            raise TypeError(f"reservation must be a Reservation, got {type(reservation).__name__}")
        if isinstance(steps_taken, bool) or not isinstance(steps_taken, int):
            raise TypeError(f"steps_taken must be an int, got {type(steps_taken).__name__}")
        if steps_taken < 0:
            raise ValueError(f"steps_taken must be >= 0, got {steps_taken}")
        time = self._now(at_time)
        with self._transaction(write=True) as conn:
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

    # --- summaries -----------------------------------------------------------------------

    def datasets(self) -> list[DatasetSummary]:
        """One summary per dataset that has charges or refusals, in order of first use."""
        with self._transaction(write=False) as conn:
            ids = [r[0] for r in conn.execute(select(charges_table.c.dataset_id))]
            ids += [r[0] for r in conn.execute(select(refusals_table.c.dataset_id))]
        out = []
        for dataset_id in dict.fromkeys(ids):
            records = self.charges(dataset_id)
            runs = self.runs(dataset_id)
            last = records[-1] if records else None
            eps = (
                epsilon_for(
                    [r.charge for r in records], delta=last.delta, accountant=last.accountant
                )
                if last
                else 0.0
            )
            out.append(
                DatasetSummary(
                    dataset_id=dataset_id,
                    runs=len(runs),
                    rounds=len(records),
                    steps=sum(r.charge.steps for r in records),
                    reserved=sum(r.status == "reserved" for r in records),
                    refusals=sum(run.refusals for run in runs),
                    epsilon=eps,
                    delta=last.delta if last else None,
                    accountant=last.accountant if last else None,
                )
            )
        return out

    def runs(
        self, dataset_id: str, *, delta: float | None = None, accountant: str | None = None
    ) -> list[RunSummary]:
        """Per run on a dataset: rounds, steps, refusals and the dataset's epsilon after it.

        "Epsilon after a run" composes every charge up to that run's last one, whichever run
        made it. `delta`/`accountant` default to those of the dataset's latest charge.
        """
        with self._transaction(write=False) as conn:
            rows = self._rows(conn, dataset_id)
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
        if rows:
            delta = rows[-1].delta if delta is None else delta
            accountant = rows[-1].accountant if accountant is None else accountant
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
            prefix = [_row_charge(r) for r in rows if r.id <= last_id[run]]
            eps = (
                epsilon_for(prefix, delta=delta, accountant=accountant)
                if prefix and delta is not None and accountant is not None
                else 0.0
            )
            out.append(
                RunSummary(
                    dataset_id=dataset_id,
                    run_id=run,
                    rounds=len(mine),
                    steps=sum(r.steps for r in mine),
                    reserved=sum(r.status == "reserved" for r in mine),
                    refusals=refusal_count.get(run, 0),
                    epsilon_after=eps,
                )
            )
        return out
