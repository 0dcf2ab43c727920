"""Verification: a clean ledger passes; each tamper kind raises naming the first bad entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _ledger_helpers import T0, Tamperer, attestation, fill

from fedsafe.common import crypto
from fedsafe.common.errors import LedgerError
from fedsafe.common.ledger import (
    ATTESTATION,
    ERROR,
    HEAD_SIGNED,
    RUN_STARTED,
    Ledger,
    LedgerTamperedError,
    head_message,
    load_site_keys,
    verify_ledger,
)
from fedsafe.common.ledger.verify import (
    BAD_HEAD,
    DIVERGED,
    EDITED,
    FORGED_SITE,
    GAP,
    INSERTED,
    REORDERED,
    TRUNCATED,
    UNKNOWN_SITE,
    UNSIGNED_TAIL,
    WRONG_SIGNER,
)

Keys = tuple[bytes, bytes]
SiteKeys = dict[str, tuple[bytes, bytes]]


def _publics(site_keypairs: SiteKeys) -> dict[str, bytes]:
    return {site: pair[1] for site, pair in site_keypairs.items()}


def test_clean_ledger_verifies_with_all_checks(
    ledger: Ledger, server_keys: Keys, site_keypairs: SiteKeys, tmp_path: Path
) -> None:
    # Arrange
    fill(ledger, 3)
    for site, (private, _) in site_keypairs.items():
        ledger.append(ATTESTATION, attestation(private, site, 1), at_time=T0)
    fill(ledger, 2)
    ledger.sign_head(server_keys[0], public_pem=server_keys[1], witness_path=tmp_path / "w.json")

    # Act
    result = verify_ledger(
        ledger,
        server_public_pem=server_keys[1],
        site_keys=_publics(site_keypairs),
        witness=tmp_path / "w.json",
    )

    # Assert
    assert result.entries_checked == result.last_seq == 8
    assert result.last_hash == ledger.head().hash  # type: ignore[union-attr]
    assert (result.signed_heads, result.attestations_checked) == (1, 2)


def _raises(ledger: Ledger, **kwargs: object) -> LedgerTamperedError:
    with pytest.raises(LedgerTamperedError) as info:
        verify_ledger(ledger, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_edited_payload_names_the_edited_entry(ledger: Ledger, tamper: Tamperer) -> None:
    # Arrange
    fill(ledger, 8)
    tamper.execute("UPDATE ledger_entries SET payload = :p WHERE seq = 5", p='{"m":"forged"}')

    # Act
    error = _raises(ledger)

    # Assert
    assert (error.seq, error.reason) == (5, EDITED)
    assert "ledger entry 5: payload edited (hash mismatch)" in str(error)


def test_deleted_entry_names_the_missing_seq(ledger: Ledger, tamper: Tamperer) -> None:
    # Arrange
    fill(ledger, 8)
    tamper.execute("DELETE FROM ledger_entries WHERE seq = 5")

    # Act
    error = _raises(ledger)

    # Assert
    assert (error.seq, error.reason) == (5, GAP)


def test_deleted_and_renumbered_entry_names_the_break(ledger: Ledger, tamper: Tamperer) -> None:
    # Arrange: delete seq 5 and shift the later rows down so seq has no gap
    fill(ledger, 8)
    tamper.execute("DELETE FROM ledger_entries WHERE seq = 5")
    for seq in range(6, 9):
        tamper.execute("UPDATE ledger_entries SET seq = :n WHERE seq = :o", n=seq - 1, o=seq)

    # Act
    error = _raises(ledger)

    # Assert
    assert (error.seq, error.reason) == (5, GAP)


def test_inserted_entry_names_the_inserted_seq(ledger: Ledger, tamper: Tamperer) -> None:
    # Arrange: shift 5..8 up and insert a correctly hashed entry at 5 linked to entry 4
    entries = fill(ledger, 8)
    for seq in range(8, 4, -1):
        tamper.execute("UPDATE ledger_entries SET seq = :n WHERE seq = :o", n=seq + 1, o=seq)
    tamper.insert(tamper.make(5, ERROR, {"m": "inserted"}, entries[3].hash))

    # Act
    error = _raises(ledger)

    # Assert
    assert (error.seq, error.reason) == (5, INSERTED)


def test_reordered_entries_name_the_first_swapped_seq(ledger: Ledger, tamper: Tamperer) -> None:
    # Arrange: swap the contents of rows 5 and 6
    fill(ledger, 8)
    row5, row6 = tamper.row(5), tamper.row(6)
    tamper.set_row(5, row6)
    tamper.set_row(6, row5)

    # Act
    error = _raises(ledger)

    # Assert
    assert (error.seq, error.reason) == (5, REORDERED)


def test_truncated_tail_after_signed_head_is_caught_by_witness(
    ledger: Ledger, server_keys: Keys, tamper: Tamperer, tmp_path: Path
) -> None:
    # Arrange: 6 entries, signed head at 7, then cut 6 and 7
    witness = tmp_path / "ledger.witness.json"
    fill(ledger, 6)
    ledger.sign_head(server_keys[0], public_pem=server_keys[1], witness_path=witness)
    tamper.execute("DELETE FROM ledger_entries WHERE seq >= 6")
    verify_ledger(ledger, require_signed_tail=False)  # without the witness, a cut is invisible

    # Act
    error = _raises(ledger, server_public_pem=server_keys[1], witness=witness)

    # Assert
    assert (error.seq, error.reason) == (6, TRUNCATED)
    assert "witness holds seq 7" in str(error)


def test_rewritten_history_diverges_from_witness(
    ledger: Ledger, server_keys: Keys, tmp_path: Path, ledger_url: str
) -> None:
    # Arrange: a witness for one history, then a different, internally valid history
    witness = tmp_path / "w.json"
    fill(ledger, 3)
    ledger.sign_head(server_keys[0], public_pem=server_keys[1], witness_path=witness)
    Tamperer(ledger_url).execute("DELETE FROM ledger_entries WHERE seq >= 3")
    ledger.append(ERROR, {"m": "rewritten"}, at_time=T0)
    ledger.sign_head(server_keys[0], public_pem=server_keys[1])

    # Act
    error = _raises(ledger, server_public_pem=server_keys[1], witness=witness)

    # Assert
    assert (error.seq, error.reason) == (3, DIVERGED)


def test_forged_site_signature_names_the_attestation(
    ledger: Ledger, site_keypairs: SiteKeys
) -> None:
    # Arrange: hungary's attestation claims a smaller epsilon than hungary signed
    fill(ledger, 2)
    forged = attestation(site_keypairs["hungary"][0], "hungary", 1, epsilon=3.0)
    forged["signed"]["epsilon"] = 0.5
    ledger.append(ATTESTATION, forged, at_time=T0)

    # Act
    error = _raises(ledger, site_keys=_publics(site_keypairs))

    # Assert
    assert (error.seq, error.reason) == (3, FORGED_SITE)
    assert "hungary" in str(error)


def test_attestation_signed_by_another_site_is_forged(
    ledger: Ledger, site_keypairs: SiteKeys
) -> None:
    # Arrange
    ledger.append(ATTESTATION, attestation(site_keypairs["cleveland"][0], "hungary", 1))

    # Act
    error = _raises(ledger, site_keys=_publics(site_keypairs))

    # Assert
    assert (error.seq, error.reason) == (1, FORGED_SITE)


def test_attestation_from_site_without_key_is_unknown_signer(
    ledger: Ledger, site_keypairs: SiteKeys
) -> None:
    # Arrange
    private, _ = crypto.generate_signing_key()
    fill(ledger, 1)
    ledger.append(ATTESTATION, attestation(private, "va_long_beach", 2))

    # Act
    error = _raises(ledger, site_keys=_publics(site_keypairs))

    # Assert
    assert (error.seq, error.reason) == (2, UNKNOWN_SITE)
    assert "va_long_beach" in str(error)


def test_bad_head_signature_names_the_head_entry(
    ledger: Ledger, server_keys: Keys, tamper: Tamperer
) -> None:
    # Arrange: a correctly chained HEAD_SIGNED whose signature is by another key
    head = fill(ledger, 3)[-1]
    other_private, _ = crypto.generate_signing_key()
    payload = {
        "head_seq": 3,
        "head_hash": head.hash,
        "signer": crypto.public_key_fingerprint(server_keys[1]),
        "signature": crypto.sign(other_private, head_message(3, head.hash)).hex(),
    }
    tamper.insert(tamper.make(4, HEAD_SIGNED, payload, head.hash))

    # Act
    error = _raises(ledger, server_public_pem=server_keys[1])

    # Assert
    assert (error.seq, error.reason) == (4, BAD_HEAD)


def test_head_signed_by_another_server_key_is_rejected(ledger: Ledger, server_keys: Keys) -> None:
    # Arrange
    fill(ledger, 2)
    other_private, other_public = crypto.generate_signing_key()
    ledger.sign_head(other_private, public_pem=other_public)

    # Act
    error = _raises(ledger, server_public_pem=server_keys[1])

    # Assert
    assert (error.seq, error.reason) == (3, WRONG_SIGNER)


def test_verify_by_path_and_missing_path(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        fill(ledger, 3)

    # Act / Assert
    assert verify_ledger(path, require_signed_tail=False).last_seq == 3
    assert verify_ledger(f"sqlite:///{path}", require_signed_tail=False).last_seq == 3
    with pytest.raises(LedgerError, match="no ledger file"):
        verify_ledger(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_witness_with_forged_signature_is_rejected(
    ledger: Ledger, server_keys: Keys, tmp_path: Path
) -> None:
    # Arrange
    witness = tmp_path / "w.json"
    fill(ledger, 2)
    ledger.sign_head(server_keys[0], public_pem=server_keys[1], witness_path=witness)
    record = json.loads(witness.read_text())
    record["signature"] = "01" + "00" * 64
    witness.write_text(json.dumps(record))

    # Act
    error = _raises(ledger, server_public_pem=server_keys[1], witness=witness)

    # Assert
    assert (error.seq, error.reason) == (3, BAD_HEAD)


def test_load_site_keys_reads_pub_files(tmp_path: Path, site_keypairs: SiteKeys) -> None:
    # Arrange
    for site, (_, public) in site_keypairs.items():
        (tmp_path / f"{site}.pub").write_bytes(public)
    (tmp_path / "notes.txt").write_text("ignored")

    # Act
    keys = load_site_keys(tmp_path)

    # Assert
    assert keys == _publics(site_keypairs)


def test_load_site_keys_rejects_a_bad_pem(tmp_path: Path) -> None:
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(LedgerError, match="bad.pub"):
        load_site_keys(tmp_path)


def test_head_signer_must_be_the_key_run_started_names(ledger: Ledger, server_keys: Keys) -> None:
    # Arrange: run_started names the server key; a head is signed with another key. No key is
    # given to the verifier: the ledger's own declaration is enough to catch it.
    ledger.append(RUN_STARTED, {"server_key": crypto.public_key_fingerprint(server_keys[1])})
    ledger.sign_head(server_keys[0], public_pem=server_keys[1])
    other_private, other_public = crypto.generate_signing_key()
    ledger.append(ERROR, {"m": "forged"}, at_time=T0)
    ledger.sign_head(other_private, public_pem=other_public)

    # Act
    error = _raises(ledger)

    # Assert
    assert (error.seq, error.reason) == (4, WRONG_SIGNER)
    assert "run_started.server_key" in error.detail


def test_rows_after_the_last_signed_head_fail_even_with_the_witness(
    ledger: Ledger, server_keys: Keys, tmp_path: Path
) -> None:
    witness = tmp_path / "w.json"
    fill(ledger, 2)
    ledger.sign_head(server_keys[0], public_pem=server_keys[1], witness_path=witness)
    ledger.append(ERROR, {"m": "appended"}, at_time=T0)

    error = _raises(ledger, server_public_pem=server_keys[1], witness=witness)

    assert (error.seq, error.reason) == (4, UNSIGNED_TAIL)
    assert verify_ledger(ledger, require_signed_tail=False).last_seq == 4
