"""A simulated site's own consent: it signs its grant at roll call and its withdrawal in time."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flwr.app import ConfigRecordValues

from fedsafe.common.config import ConsentEntry, ExperimentConfig
from fedsafe.common.consent import (
    ConsentRecord,
    parse_time,
    sign_consent,
    sign_withdrawal,
    withdrawal_to_dict,
)

__all__ = ["site_entries", "grants_record", "withdrawals_record"]


def site_entries(cfg: ExperimentConfig, site: str) -> list[ConsentEntry]:
    """This site's declared consent; with none declared at all, it consents to the run's purpose."""
    declared = cfg.compliance.consent
    if not declared:
        return [
            ConsentEntry(site=site, purposes=(cfg.compliance.purpose,), legal_basis="simulation")
        ]
    return [e for e in declared if e.site == site]


def _record_id(cfg: ExperimentConfig, site: str, index: int) -> str:
    return f"{site}:{cfg.dataset.name}:{index}"


def grants_record(
    cfg: ExperimentConfig, site: str, private_pem: bytes, public_pem: bytes
) -> dict[str, ConfigRecordValues]:
    """Signed grants as one JSON text for a ConfigRecord; the server verifies before storing."""
    now = datetime.now(UTC)
    grants = []
    for index, entry in enumerate(site_entries(cfg, site)):
        record = ConsentRecord(
            site=site,
            dataset=cfg.dataset.name,
            purposes=entry.purposes or (cfg.compliance.purpose,),
            legal_basis=entry.legal_basis or "unspecified",
            data_categories=entry.data_categories or ("pseudonymised records",),
            jurisdiction=entry.jurisdiction or "unspecified",
            valid_from=parse_time(entry.valid_from, field="valid_from")
            if entry.valid_from
            else now,
            valid_until=parse_time(entry.valid_until, field="valid_until")
            if entry.valid_until
            else None,
            granted_at=now,
            record_id=_record_id(cfg, site, index),
        )
        grants.append(sign_consent(record, private_pem, site_public_pem=public_pem).to_dict())
    withdrawals = _withdrawals(cfg, site, private_pem, next_round=1)
    return {"json": json.dumps({"grants": grants, "withdrawals": withdrawals})}


def withdrawals_record(
    cfg: ExperimentConfig, site: str, private_pem: bytes, *, next_round: int
) -> dict[str, ConfigRecordValues] | None:
    """Withdrawals the site signs now because its consent ends at `next_round` (None if none)."""
    items = _withdrawals(cfg, site, private_pem, next_round=next_round)
    return {"json": json.dumps({"grants": [], "withdrawals": items})} if items else None


def _withdrawals(
    cfg: ExperimentConfig, site: str, private_pem: bytes, *, next_round: int
) -> list[dict[str, str]]:
    now = datetime.now(UTC)
    return [
        withdrawal_to_dict(
            sign_withdrawal(
                record_id=_record_id(cfg, site, index),
                site=site,
                withdrawn_at=now,
                site_private_pem=private_pem,
            )
        )
        for index, entry in enumerate(site_entries(cfg, site))
        if entry.withdraw_at_round == next_round
    ]
