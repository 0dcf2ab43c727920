"""Consent registry: stores site-signed grants and withdrawals, and decides each site's round."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    inspect,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import StaticPool

from fedsafe.common.consent import (
    ConsentRecord,
    SignedConsent,
    Withdrawal,
    parse_time,
    sign_consent,
    sign_withdrawal,
    verify_consent,
    verify_withdrawal,
)
from fedsafe.common.errors import ConfigError, ConsentError, IntegrityError
from fedsafe.common.files import private_file
from fedsafe.common.ledger.records import format_time
from fedsafe.common.sqlite_setup import WRITE_OPTION, configure_sqlite

__all__ = [
    "DEFAULT_FILENAME",
    "ConsentDecision",
    "ConsentEntry",
    "ConsentRegistry",
    "consent_tables",
    "registry_url",
]

DEFAULT_FILENAME = "consent.db"
_CONFIG_KEYS = (
    "site",
    "dataset",
    "purposes",
    "legal_basis",
    "data_categories",
    "jurisdiction",
    "valid_from",
    "valid_until",
    "withdraw_at_round",
    "record_id",
)

consent_tables = MetaData()
# v2 tables: keyed by (site, record_id). Rows of the v1 tables (keyed by record_id alone) are
# copied in once when a v2 registry is first opened on an old file; signatures are re-checked
# at every decision as always.
_LEGACY = {
    "site_consent_records": "consent_records",
    "site_consent_withdrawals": "consent_withdrawals",
}
_records = Table(
    "site_consent_records",
    consent_tables,
    # A record id is the site's own name for its grant: (site, record_id) is the key, so one
    # site can never take, shadow or block another site's id by registering it first.
    Column("site", String(128), primary_key=True),
    Column("record_id", String(128), primary_key=True),
    Column("dataset", String(256), nullable=False),
    Column("purposes", Text, nullable=False),  # JSON list, in the order the site signed
    Column("legal_basis", Text, nullable=False),
    Column("data_categories", Text, nullable=False),  # JSON list
    Column("jurisdiction", String(64), nullable=False),
    Column("valid_from", String(32), nullable=False),  # format_time: fixed width, sortable
    Column("valid_until", String(32), nullable=True),
    Column("granted_at", String(32), nullable=False),
    Column("signature", String(256), nullable=False),  # hex
    Column("signer", String(64), nullable=False),  # public_key_fingerprint of the site key
)
_withdrawals = Table(
    "site_consent_withdrawals",
    consent_tables,
    Column("site", String(128), primary_key=True),
    Column("record_id", String(128), primary_key=True),
    Column("withdrawn_at", String(32), nullable=False),
    Column("signature", String(256), nullable=False),
)


@dataclass(frozen=True)
class ConsentDecision:
    """Whether ``site`` may take part this round, and a reason a compliance officer can read.

    ``code`` is the machine-readable reason: granted, no_record, invalid_signature,
    not_yet_valid, expired, withdrawn, purpose, jurisdiction.
    """

    site: str
    allowed: bool
    reason: str
    record_id: str | None
    code: str = ""

    def ledger_payload(self, round_number: int) -> dict[str, Any]:
        """Payload of a ``consent_decision`` ledger entry (see common.ledger.records)."""
        if self.allowed:
            decision = "granted"
        elif self.code == "withdrawn":
            decision = "withdrawn"
        else:
            decision = "refused"
        return {
            "site": self.site,
            "round": round_number,
            "decision": decision,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ConsentEntry:
    """A stored grant and, if the site withdrew it, the withdrawal (as stored, not re-verified)."""

    signed: SignedConsent
    withdrawal: Withdrawal | None


def registry_url(url_or_path: str | os.PathLike[str]) -> str:
    """URL as given; a directory means ``<dir>/consent.db``; any other path a SQLite file."""
    text = os.fspath(url_or_path)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / DEFAULT_FILENAME
    return f"sqlite:///{path.resolve()}"


def _copy_legacy_rows(engine: Engine) -> None:
    """Bring the rows of a v1 registry (same columns, other key) into the v2 tables."""
    names = set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        for table in (_records, _withdrawals):
            legacy = _LEGACY[table.name]
            if legacy not in names:
                continue
            columns = [c.name for c in table.columns]
            old = Table(legacy, MetaData(), autoload_with=conn)
            rows = conn.execute(select(*(old.c[name] for name in columns))).all()
            if rows:
                conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def _is_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:")


def _record_row(signed: SignedConsent) -> dict[str, Any]:
    data = signed.record.to_dict()
    data["purposes"] = json.dumps(data["purposes"])
    data["data_categories"] = json.dumps(data["data_categories"])
    data["signature"] = signed.signature.hex()
    data["signer"] = signed.signer
    return data


def _row_to_signed(row: Any) -> SignedConsent:
    """Rebuild exactly what was stored; a row edited out of shape raises ValueError/TypeError."""
    record = ConsentRecord.from_dict(
        {
            "record_id": row.record_id,
            "site": row.site,
            "dataset": row.dataset,
            "purposes": json.loads(row.purposes),
            "legal_basis": row.legal_basis,
            "data_categories": json.loads(row.data_categories),
            "jurisdiction": row.jurisdiction,
            "valid_from": row.valid_from,
            "valid_until": row.valid_until,
            "granted_at": row.granted_at,
        }
    )
    return SignedConsent(record, bytes.fromhex(row.signature), row.signer)


def _row_to_withdrawal(row: Any) -> Withdrawal:
    return Withdrawal(
        row.record_id,
        row.site,
        parse_time(row.withdrawn_at, field="withdrawn_at"),
        bytes.fromhex(row.signature),
    )


def _aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (naive datetimes are ambiguous)")
    return value.astimezone(UTC)


class ConsentRegistry:
    """Site-signed consent records behind SQLAlchemy Core (portable SQL: SQLite or PostgreSQL).

    The server can store and read records but never create one: every grant and withdrawal is
    verified against the site's public key before it is stored, and grants are re-verified at
    every decision, so a row edited in the database is refused rather than trusted. Records
    are keyed by (site, record_id): ids are namespaced by the site that signed them. Deleting a
    withdrawal row cannot be detected here; the run's ledger keeps every withdrawal it received
    and the coordinator's gate (server.compliance) refuses a site whose withdrawal went missing.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._planned: dict[tuple[int, str], list[str]] = {}
        try:
            fresh = not inspect(engine).has_table(_records.name)
            consent_tables.create_all(engine, checkfirst=True)
            if fresh:
                _copy_legacy_rows(engine)
        except sa_exc.SQLAlchemyError as err:
            raise ConsentError(f"cannot open consent registry at {engine.url!r}: {err}") from err

    @classmethod
    def open(
        cls, url_or_path: str | os.PathLike[str] = "sqlite://", *, create: bool = True
    ) -> ConsentRegistry:
        """Open a registry: SQLAlchemy URL, SQLite file, or a folder (gets ``consent.db``).

        ``sqlite://`` is an in-memory registry shared by all threads, for simulations. With
        ``create=False`` a missing SQLite file is an error instead of a new empty registry,
        so a mistyped path is not mistaken for "no consent".
        """
        url = registry_url(url_or_path)
        if not create and url.startswith("sqlite:///") and not _is_memory(url):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.is_file():
                raise ConsentError(f"no consent registry at {path} (nothing granted there yet?)")
        if _is_memory(url):
            engine = create_engine(
                "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
            )
        elif url.startswith("sqlite"):
            if create and url.startswith("sqlite:///"):
                private_file(Path(url.removeprefix("sqlite:///")))  # 0600: consent records
            engine = create_engine(url, connect_args={"timeout": 30})
            # The settings every fedsafe store shares: WAL (so `fedsafe consent grant` writes
            # while a running server reads), durable commits, writers that lock first.
            configure_sqlite(engine)

        else:
            engine = create_engine(url)
        return cls(engine)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that takes SQLite's write lock first (BEGIN IMMEDIATE)."""
        with self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @property
    def engine(self) -> Engine:
        """The underlying engine (tests use it to tamper with rows)."""
        return self._engine

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> ConsentRegistry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- writes -------------------------------------------------------------------------------

    def grant(self, signed: SignedConsent, site_public_pem: bytes) -> None:
        """Store a site-signed grant after verifying it; a bad signature stores nothing.

        Re-granting the identical signed record is a no-op (so a retry is safe); a different
        record under an existing id is refused.
        """
        if not isinstance(signed, SignedConsent):
            raise TypeError(f"signed must be SignedConsent, got {type(signed).__name__}")
        record = signed.record
        try:
            verify_consent(signed, site_public_pem)
        except IntegrityError:
            raise IntegrityError(
                f"consent {record.record_id} for site '{record.site}' refused: signature does "
                "not verify with the site's public key (nothing stored)"
            ) from None
        row = _record_row(signed)
        with self._write() as conn:
            existing = conn.execute(
                select(_records).where(
                    _records.c.site == record.site, _records.c.record_id == record.record_id
                )
            ).first()
            if existing is not None:
                if dict(existing._mapping) == row:
                    return
                raise ConsentError(
                    f"consent {record.record_id} is already on record with different content; "
                    "a site changes consent by withdrawing and granting a new record"
                )
            conn.execute(insert(_records).values(**row))

    def withdraw(self, withdrawal: Withdrawal, site_public_pem: bytes) -> None:
        """Store a site-signed withdrawal after verifying it; the server cannot forge one."""
        if not isinstance(withdrawal, Withdrawal):
            raise TypeError(f"withdrawal must be Withdrawal, got {type(withdrawal).__name__}")
        try:
            verify_withdrawal(withdrawal, site_public_pem)
        except IntegrityError:
            raise IntegrityError(
                f"withdrawal of consent {withdrawal.record_id} by site '{withdrawal.site}' "
                "refused: signature does not verify with the site's public key (nothing stored)"
            ) from None
        with self._write() as conn:
            owner = conn.execute(
                select(_records.c.site).where(
                    _records.c.site == withdrawal.site,
                    _records.c.record_id == withdrawal.record_id,
                )
            ).scalar_one_or_none()
            if owner is None:
                raise ConsentError(
                    f"no consent {withdrawal.record_id} of site '{withdrawal.site}' on record "
                    "to withdraw (a site can only withdraw its own consent)"
                )
            earlier = conn.execute(
                select(_withdrawals.c.withdrawn_at).where(
                    _withdrawals.c.site == withdrawal.site,
                    _withdrawals.c.record_id == withdrawal.record_id,
                )
            ).scalar_one_or_none()
            if earlier is not None:
                raise ConsentError(f"consent {withdrawal.record_id} already withdrawn at {earlier}")
            conn.execute(
                insert(_withdrawals).values(
                    record_id=withdrawal.record_id,
                    site=withdrawal.site,
                    withdrawn_at=format_time(withdrawal.withdrawn_at),
                    signature=withdrawal.signature.hex(),
                )
            )

    # --- reads --------------------------------------------------------------------------------

    def records(self, site: str | None = None) -> list[ConsentEntry]:
        """Every stored grant (optionally one site's), ordered by site, grant time and id."""
        query = select(
            _records,
            _withdrawals.c.withdrawn_at,
            _withdrawals.c.site.label("w_site"),
            _withdrawals.c.signature.label("w_sig"),
        )
        query = query.outerjoin(
            _withdrawals,
            (_withdrawals.c.record_id == _records.c.record_id)
            & (_withdrawals.c.site == _records.c.site),
        )
        if site is not None:
            query = query.where(_records.c.site == site)
        query = query.order_by(_records.c.site, _records.c.granted_at, _records.c.record_id)
        entries = []
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                try:
                    withdrawal = None
                    if row.withdrawn_at is not None:
                        withdrawal = Withdrawal(
                            row.record_id,
                            row.w_site,
                            parse_time(row.withdrawn_at, field="withdrawn_at"),
                            bytes.fromhex(row.w_sig),
                        )
                    entries.append(ConsentEntry(_row_to_signed(row), withdrawal))
                except (ValueError, TypeError, KeyError) as err:
                    raise ConsentError(
                        f"consent {row.record_id}: stored row is malformed ({err}); "
                        "it was edited outside fedsafe"
                    ) from None
        return entries

    def decide(
        self,
        *,
        site: str,
        dataset: str,
        purpose: str,
        at_time: datetime,
        jurisdictions: tuple[str, ...] | None,
        site_public_pem: bytes,
    ) -> ConsentDecision:
        """Decide whether ``site`` may train on ``dataset`` for ``purpose`` at ``at_time``.

        Allowed only by a record whose signature (and withdrawal's, if any) verifies now, that
        covers dataset and purpose, is in force (valid_from <= at_time < valid_until), was not
        withdrawn at or before ``at_time``, and lies in one of ``jurisdictions`` (None = any).
        When several records cover the dataset, any one that allows suffices; otherwise a
        signature failure is reported first (tampering matters most), then the newest record's
        reason.
        """
        at_time = _aware("at_time", at_time)
        if jurisdictions is not None and not isinstance(jurisdictions, tuple):
            raise TypeError(
                f"jurisdictions must be a tuple of str or None, got {type(jurisdictions).__name__}"
            )
        query = (
            select(_records)
            .where(_records.c.site == site, _records.c.dataset == dataset)
            .order_by(_records.c.granted_at.desc(), _records.c.record_id)
        )
        with self._engine.connect() as conn:
            rows = list(conn.execute(query))
            withdrawn = {
                row.record_id: row
                for row in conn.execute(
                    select(_withdrawals).where(
                        _withdrawals.c.site == site,
                        _withdrawals.c.record_id.in_([r.record_id for r in rows]),
                    )
                )
            }
        if not rows:
            return ConsentDecision(
                site, False, f"no consent on record for dataset '{dataset}'", None, "no_record"
            )
        refusals = [
            self._check(
                row, withdrawn.get(row.record_id), purpose, at_time, jurisdictions, site_public_pem
            )
            for row in rows
        ]
        for decision in refusals:
            if decision.allowed:
                return decision
        for decision in refusals:
            if decision.code == "invalid_signature":
                return decision
        return refusals[0]

    @staticmethod
    def _check(
        row: Any,
        withdrawal_row: Any,
        purpose: str,
        at_time: datetime,
        jurisdictions: tuple[str, ...] | None,
        site_public_pem: bytes,
    ) -> ConsentDecision:
        site, rid = row.site, row.record_id

        def refuse(code: str, reason: str) -> ConsentDecision:
            sep = " " if code in ("withdrawn", "expired", "not_yet_valid") else ": "
            return ConsentDecision(site, False, f"consent {rid}{sep}{reason}", rid, code)

        try:
            signed = _row_to_signed(row)
            verify_consent(signed, site_public_pem)
            withdrawal = None if withdrawal_row is None else _row_to_withdrawal(withdrawal_row)
            if withdrawal is not None:
                if withdrawal.site != signed.record.site:
                    raise IntegrityError("signature does not verify")
                verify_withdrawal(withdrawal, site_public_pem)
        except (IntegrityError, ValueError, TypeError, KeyError):
            # A row edited out of shape is as untrustworthy as one whose signature fails.
            return refuse("invalid_signature", "signature does not verify")
        record = signed.record
        if withdrawal is not None and withdrawal.withdrawn_at <= at_time:
            return refuse("withdrawn", f"withdrawn at {format_time(withdrawal.withdrawn_at)}")
        if at_time < record.valid_from:
            return refuse("not_yet_valid", f"not valid until {format_time(record.valid_from)}")
        if record.valid_until is not None and at_time >= record.valid_until:
            return refuse("expired", f"expired at {format_time(record.valid_until)}")
        if purpose not in record.purposes:
            return refuse(
                "purpose",
                f"purpose '{purpose}' not covered (covers: {', '.join(record.purposes)})",
            )
        if jurisdictions is not None and record.jurisdiction not in jurisdictions:
            return refuse(
                "jurisdiction",
                f"jurisdiction '{record.jurisdiction}' not allowed by the run policy "
                f"({', '.join(jurisdictions) or 'none'})",
            )
        until = (
            "open-ended"
            if record.valid_until is None
            else f"until {format_time(record.valid_until)}"
        )
        return ConsentDecision(
            site,
            True,
            f"consent {rid} covers dataset '{record.dataset}' for purpose '{purpose}' "
            f"({record.legal_basis}; {record.jurisdiction}; {until})",
            rid,
            "granted",
        )

    # --- simulations ----------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        entries: Iterable[Mapping[str, Any] | Any],
        keys: Mapping[str, tuple[bytes, bytes]],
        *,
        now: datetime,
        dataset: str | None = None,
        url: str | os.PathLike[str] = "sqlite://",
        source: str | None = None,
    ) -> tuple[ConsentRegistry, dict[int, list[str]]]:
        """Build a registry of site-signed grants from plain config entries (simulation only).

        ``keys`` maps site -> (private PEM, public PEM); in a simulation the lead holds every
        key, so it signs on each site's behalf. ``withdraw_at_round`` is not applied here: the
        returned schedule ``{round: [site]}`` says when the server calls
        ``apply_withdrawals`` at the start of that round.
        """
        now = _aware("now", now)
        registry = cls.open(url)
        schedule: dict[int, list[str]] = {}
        for index, raw in enumerate(entries):
            entry = asdict(raw) if is_dataclass(raw) and not isinstance(raw, type) else raw
            signed, public_pem, round_number = _entry_to_grant(
                index, entry, keys, now=now, dataset=dataset, source=source
            )
            registry.grant(signed, public_pem)
            if round_number is not None:
                site = signed.record.site
                registry._planned.setdefault((round_number, site), []).append(
                    signed.record.record_id
                )
                sites = schedule.setdefault(round_number, [])
                if site not in sites:
                    sites.append(site)
        return registry, dict(sorted(schedule.items()))

    def apply_withdrawals(
        self,
        round_number: int,
        schedule: Mapping[int, Sequence[str]],
        keys: Mapping[str, tuple[bytes, bytes]],
        *,
        at_time: datetime,
    ) -> list[Withdrawal]:
        """Withdraw, signed by each site's key, what ``schedule`` lists for ``round_number``.

        For a schedule from ``from_config`` exactly the entries with that ``withdraw_at_round``
        are withdrawn; for a site listed by another schedule, all its records still in force.
        """
        at_time = _aware("at_time", at_time)
        done: list[Withdrawal] = []
        for site in schedule.get(round_number, ()):
            if site not in keys:
                raise ConfigError(
                    "keys", site, f"a signing key for every scheduled site (known: {sorted(keys)})"
                )
            private_pem, public_pem = keys[site]
            planned = self._planned.get((round_number, site))
            if planned is None:
                planned = [
                    e.signed.record.record_id for e in self.records(site) if e.withdrawal is None
                ]
            already = {e.signed.record.record_id for e in self.records(site) if e.withdrawal}
            for record_id in planned:
                if record_id in already:
                    continue
                withdrawal = sign_withdrawal(
                    record_id=record_id,
                    site=site,
                    withdrawn_at=at_time,
                    site_private_pem=private_pem,
                )
                self.withdraw(withdrawal, public_pem)
                done.append(withdrawal)
        return done


def _entry_to_grant(
    index: int,
    entry: Any,
    keys: Mapping[str, tuple[bytes, bytes]],
    *,
    now: datetime,
    dataset: str | None,
    source: str | None,
) -> tuple[SignedConsent, bytes, int | None]:
    """Check one config entry by name and sign it with its site's key."""
    where = f"consent[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(where, entry, "a mapping of consent fields", source=source)
    unknown = sorted(set(entry) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}",
            entry[unknown[0]],
            f"one of {', '.join(_CONFIG_KEYS)}",
            source=source,
        )

    def required(key: str) -> Any:
        if entry.get(key) is None:
            raise ConfigError(f"{where}.{key}", None, "a value (required)", source=source)
        return entry[key]

    def when(key: str, default: datetime | None) -> datetime | None:
        value = entry.get(key)
        if value is None:
            return default
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(value, field=key)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}.{key}",
                value,
                "ISO-8601 time with zone (e.g. 2025-01-01T00:00:00Z) or null",
                source=source,
            ) from None

    site = required("site")
    if site not in keys:
        raise ConfigError(
            f"{where}.site",
            site,
            f"a site with a signing key (known: {', '.join(sorted(keys))})",
            source=source,
        )
    chosen = entry.get("dataset") or dataset
    if chosen is None:
        raise ConfigError(f"{where}.dataset", None, "a dataset name (required)", source=source)
    round_number = entry.get("withdraw_at_round")
    if round_number is not None and (
        isinstance(round_number, bool) or not isinstance(round_number, int) or round_number < 1
    ):
        raise ConfigError(
            f"{where}.withdraw_at_round", round_number, "a round number >= 1 or null", source=source
        )
    fields = {key: required(key) for key in ("purposes", "legal_basis", "data_categories")}
    jurisdiction = required("jurisdiction")
    valid_from = when("valid_from", now) or now
    valid_until = when("valid_until", None)
    try:
        record = ConsentRecord(
            site=site,
            dataset=chosen,
            purposes=fields["purposes"],
            legal_basis=fields["legal_basis"],
            data_categories=fields["data_categories"],
            jurisdiction=jurisdiction,
            valid_from=valid_from,
            valid_until=valid_until,
            granted_at=now,
            record_id=entry.get("record_id") or f"cfg-{site}-{index}",
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(where, dict(entry), str(err), source=source) from None
    private_pem, public_pem = keys[site]
    return sign_consent(record, private_pem, site_public_pem=public_pem), public_pem, round_number
