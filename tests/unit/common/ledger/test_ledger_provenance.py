"""Provenance card: built only from entries, per round and per site."""

from __future__ import annotations

import pytest
from _ledger_helpers import T0, attestation

from fedsafe.common.errors import LedgerError
from fedsafe.common.ledger import (
    ATTESTATION,
    DROPOUT,
    ROUND_AGGREGATED,
    RUN_FINISHED,
    RUN_STARTED,
    Ledger,
    provenance_card,
)

SiteKeys = dict[str, tuple[bytes, bytes]]
STARTED = {
    "run_id": "run-1",
    "purpose": "heart disease risk model",
    "code_version": "abc123",
    "config_hash": "c" * 64,
    "strategy": "fedavg",
    "privacy": {"accountant": "rdp", "delta": 1e-5},
    "secure_aggregation": False,
}


def _run(ledger: Ledger, site_keypairs: SiteKeys) -> None:
    cle, hun = site_keypairs["cleveland"][0], site_keypairs["hungary"][0]
    ledger.append(RUN_STARTED, STARTED, at_time=T0)
    ledger.append_many(
        [
            (ATTESTATION, attestation(cle, "cleveland", 1, epsilon=0.8)),
            (ATTESTATION, attestation(hun, "hungary", 1, epsilon=0.9)),
            (
                ROUND_AGGREGATED,
                {"round": 1, "sites": ["hungary", "cleveland"], "aggregate_digest": "a"},
            ),
        ],
        at_time=T0,
    )
    ledger.append_many(
        [
            (ATTESTATION, attestation(cle, "cleveland", 2, epsilon=1.2)),
            (ATTESTATION, attestation(hun, "hungary", 2, epsilon=0.9, refused=True)),
            (DROPOUT, {"site": "switzerland", "round": 2, "reason": "timeout"}),
        ],
        at_time=T0,
    )
    ledger.append(
        RUN_FINISHED,
        {"run_id": "run-1", "rounds_completed": 2, "final_model_sha256": "f" * 64},
        at_time=T0,
    )


def test_provenance_card_summarises_the_run(ledger: Ledger, site_keypairs: SiteKeys) -> None:
    # Arrange
    _run(ledger, site_keypairs)

    # Act
    card = provenance_card(ledger)

    # Assert
    assert {k: card[k] for k in STARTED} == STARTED
    assert card["final_model_sha256"] == "f" * 64 and card["rounds_completed"] == 2
    assert card["rounds"] == [
        {
            "round": 1,
            "sites": ["cleveland", "hungary"],
            "refused": [],
            "dropouts": [],
            "aggregated_sites": ["cleveland", "hungary"],
        },
        {
            "round": 2,
            "sites": ["cleveland"],
            "refused": ["hungary"],
            "dropouts": ["switzerland"],
            "aggregated_sites": None,
        },
    ]
    assert card["sites"]["cleveland"]["final_epsilon"] == 1.2
    assert card["sites"]["cleveland"]["total_steps"] == 20
    assert card["sites"]["hungary"] == {
        "rounds": [1],
        "refused_rounds": [2],
        "final_epsilon": 0.9,
        "delta": 1e-5,
        "total_steps": 10,
    }
    assert card["ledger"]["entries"] == 8 and card["ledger"]["head_seq"] == 8


def test_provenance_card_of_ledger_without_run_raises(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="no run_started"):
        provenance_card(ledger)


def test_provenance_card_needs_run_id_when_ambiguous(ledger: Ledger) -> None:
    # Arrange
    ledger.append(RUN_STARTED, {**STARTED, "run_id": "a"})
    ledger.append(RUN_STARTED, {**STARTED, "run_id": "b"})

    # Act / Assert
    with pytest.raises(ValueError, match="one of: a, b"):
        provenance_card(ledger)
    with pytest.raises(ValueError, match="unknown run_id 'c'"):
        provenance_card(ledger, run_id="c")
    assert provenance_card(ledger, run_id="b")["run_id"] == "b"
