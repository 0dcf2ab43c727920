"""Consent registry: stores site-signed grants and withdrawals, and decides each site's round."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    insert,
    select,
)
from sqlalchemy import exc as sa_exc

from fedsafe.common.consent import (
    SignedConsent,
    Withdrawal,
    parse_time,
    verify_consent,
    verify_withdrawal,
)
from fedsafe.common.errors import ConsentError, IntegrityError
from fedsafe.common.ledger.records import format_time
from fedsafe.common.storage import StoreVersionError, transaction
from fedsafe.server.consent.config_grants import signed_grants, signed_withdrawals
from fedsafe.server.consent.decision import ConsentDecision, ConsentEntry, aware
from fedsafe.server.consent.store import (
    CONSENT_SCHEMA,
    _record_row,
    _records,
    _row_to_signed,
    _row_to_withdrawal,
    _withdrawals,
    consent_tables,
    open_engine,
)

__all__ = ["ConsentDecision", "ConsentEntry", "ConsentRegistry"]


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
        where = engine.url.render_as_string(hide_password=True)
        try:
            CONSENT_SCHEMA.prepare(engine, where, consent_tables)
        except StoreVersionError as err:
            engine.dispose()  # a refused store keeps no connection (nor its WAL files) open
            raise ConsentError(str(err)) from err
        except sa_exc.SQLAlchemyError as err:
            engine.dispose()
            raise ConsentError(f"cannot open consent registry at {engine.url!r}: {err}") from err

    @classmethod
    def open(
        cls, url_or_path: str | os.PathLike[str] = "sqlite://", *, create: bool = True
    ) -> ConsentRegistry:
        """Open a registry: SQLAlchemy URL, SQLite file, or a folder (gets ``consent.db``).

        ``sqlite://`` is an in-memory registry shared by all threads, for simulations; with
        ``create=False`` a missing SQLite file is an error, never a new empty registry.
        """
        return cls(open_engine(url_or_path, create=create))

    def _write(self) -> AbstractContextManager[Connection]:
        """A write transaction that takes SQLite's write lock first (BEGIN IMMEDIATE)."""
        return transaction(self._engine, write=True)

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
        at_time = aware("at_time", at_time)
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
        basis: str | None = None  # known once the record's signature verifies

        def refuse(code: str, reason: str) -> ConsentDecision:
            sep = " " if code in ("withdrawn", "expired", "not_yet_valid") else ": "
            return ConsentDecision(site, False, f"consent {rid}{sep}{reason}", rid, code, basis)

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
        basis = record.legal_basis
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
            basis,
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
        registry = cls.open(url)
        schedule: dict[int, list[str]] = {}
        grants = signed_grants(entries, keys, now=aware("now", now), dataset=dataset, source=source)
        for signed, public_pem, round_number in grants:
            registry.grant(signed, public_pem)
            if round_number is not None:
                site = signed.record.site
                registry._planned.setdefault((round_number, site), []).append(
                    signed.record.record_id
                )
                if site not in schedule.setdefault(round_number, []):
                    schedule[round_number].append(site)
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
        at_time = aware("at_time", at_time)
        done: list[Withdrawal] = []
        for site in schedule.get(round_number, ()):
            entries = self.records(site)
            planned = self._planned.get((round_number, site))
            if planned is None:
                planned = [e.signed.record.record_id for e in entries if e.withdrawal is None]
            already = {e.signed.record.record_id for e in entries if e.withdrawal}
            due = [record_id for record_id in planned if record_id not in already]
            withdrawals, public_pem = signed_withdrawals(site, due, keys, at_time=at_time)
            for withdrawal in withdrawals:
                self.withdraw(withdrawal, public_pem)
            done += withdrawals
        return done
