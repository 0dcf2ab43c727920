"""A forger of run folders: appended rows, re-signed histories, replaced keys and witnesses.

Each test edits what a person with write access to the run folder could edit, then runs
`fedsafe audit verify` as an auditor would, with and without keys held apart from the folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from _ledger_helpers import T0, attestation

from fedsafe.common import crypto
from fedsafe.common.ledger import ATTESTATION, RUN_FINISHED, RUN_STARTED, Ledger
from fedsafe.common.ledger.audit import MISSING_KEY, MISSING_WITNESS, STALE_WITNESS
from fedsafe.common.ledger.verify import UNSIGNED_TAIL, WRONG_SIGNER
from fedsafe.simulations.cli import main as fedsafe

Keys = tuple[bytes, bytes]


@dataclass
class Folder:
    run: Path
    auditor: Path  # the auditor's own copy of server_signing.pub, outside the run folder
    server: Keys
    site: Keys


def _write_history(run: Path, server: Keys, site: Keys, *, forged_finish: bool = False) -> None:
    """A small run as the coordinator writes it: started, attested, signed, finished, signed."""
    with Ledger.open(run / "ledger.sqlite") as led:
        led.append(
            RUN_STARTED,
            {
                "run_id": "r1",
                "server_key": crypto.public_key_fingerprint(server[1]),
                "participants": {"cleveland": crypto.public_key_fingerprint(site[1])},
            },
            at_time=T0,
        )
        led.append(ATTESTATION, attestation(site[0], "cleveland", 1), at_time=T0)
        led.sign_head(server[0], public_pem=server[1], witness_path=run / "ledger.witness.json")
        finished = {"run_id": "r1", "rounds_completed": 1, "final_model_sha256": "0" * 64}
        if forged_finish:
            finished["rounds_completed"] = 99
        led.append(RUN_FINISHED, finished, at_time=T0)
        led.sign_head(server[0], public_pem=server[1], witness_path=run / "ledger.witness.json")


def _publish_keys(run: Path, server: Keys, site: Keys) -> None:
    (run / "keys" / "sites").mkdir(parents=True, exist_ok=True)
    (run / "keys" / "server_signing.pub").write_bytes(server[1])
    (run / "keys" / "sites" / "cleveland.pub").write_bytes(site[1])


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    server, site = crypto.generate_signing_key(), crypto.generate_signing_key()
    _write_history(run, server, site)
    _publish_keys(run, server, site)
    auditor = tmp_path / "auditor" / "server_signing.pub"
    auditor.parent.mkdir()
    auditor.write_bytes(server[1])
    return Folder(run, auditor, server, site)


def _audit(folder: Folder, *anchors: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = fedsafe(["audit", "verify", str(folder.run), "--json", *anchors])
    return code, json.loads(capsys.readouterr().out)


def _resign_with_fresh_key(folder: Folder) -> None:
    """Rewrite the whole history with the forger's own key, replacing key and witness."""
    forger = crypto.generate_signing_key()
    (folder.run / "ledger.sqlite").unlink()
    (folder.run / "ledger.witness.json").unlink()
    _write_history(folder.run, forger, folder.site, forged_finish=True)
    (folder.run / "keys" / "server_signing.pub").write_bytes(forger[1])


def test_genuine_folder_is_intact_only_against_an_independent_anchor(
    folder: Folder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "kept-witness.json"
    shutil.copyfile(folder.run / "ledger.witness.json", kept)
    fingerprint = crypto.public_key_fingerprint(folder.server[1])
    for anchors in (["--key", str(folder.auditor)], ["--fingerprint", fingerprint]):
        code, out = _audit(folder, *anchors, capsys=capsys)
        assert (code, out["status"]) == (0, "intact"), out
    code, out = _audit(folder, "--witness", str(kept), capsys=capsys)
    assert (code, out["status"]) == (0, "intact"), out

    code, out = _audit(folder, capsys=capsys)

    assert (code, out["status"], out["ok"]) == (3, "unverifiable", False)
    assert "independent copy" in out["message"]


def test_keys_inside_the_run_folder_are_not_independent(
    folder: Folder, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _audit(folder, "--keys", str(folder.run / "keys"), capsys=capsys)

    assert (code, out["status"]) == (3, "unverifiable")


def test_a_row_appended_after_the_last_signed_head_fails(
    folder: Folder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: a correctly hashed run_finished appended after the final head
    kept = tmp_path / "kept-witness.json"
    shutil.copyfile(folder.run / "ledger.witness.json", kept)
    with Ledger.open(folder.run / "ledger.sqlite") as led:
        head = led.head()
        assert head is not None
        led.append(RUN_FINISHED, {"run_id": "r1", "rounds_completed": 99}, at_time=T0)

    # Act / Assert: with the original witness, an independent key, or nothing
    for anchors in ([], ["--witness", str(kept)], ["--key", str(folder.auditor)]):
        code, out = _audit(folder, *anchors, capsys=capsys)
        assert (code, out["status"], out["reason"]) == (1, "tampered", UNSIGNED_TAIL), anchors
        assert out["first_bad_entry"] == head.seq + 1


def test_history_resigned_with_a_fresh_key_fails_against_the_auditors_key(
    folder: Folder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "kept-witness.json"
    shutil.copyfile(folder.run / "ledger.witness.json", kept)
    _resign_with_fresh_key(folder)
    fingerprint = crypto.public_key_fingerprint(folder.server[1])

    for anchors in (
        ["--key", str(folder.auditor)],
        ["--fingerprint", fingerprint],
        ["--witness", str(kept)],
    ):
        code, out = _audit(folder, *anchors, capsys=capsys)
        assert (code, out["status"]) == (1, "tampered"), (anchors, out)

    code, out = _audit(folder, capsys=capsys)
    assert (code, out["status"]) == (3, "unverifiable")  # never "intact"


def test_a_head_signed_by_a_key_other_than_run_started_names_fails(
    folder: Folder, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: the forger appends its own signed head with its own key, publishing it
    forger = crypto.generate_signing_key()
    with Ledger.open(folder.run / "ledger.sqlite") as led:
        led.append(RUN_FINISHED, {"run_id": "r1", "rounds_completed": 99}, at_time=T0)
        led.sign_head(
            forger[0], public_pem=forger[1], witness_path=folder.run / "ledger.witness.json"
        )
    (folder.run / "keys" / "server_signing.pub").write_bytes(forger[1])

    code, out = _audit(folder, capsys=capsys)

    assert (code, out["reason"]) == (1, WRONG_SIGNER)


def test_deleted_witness_fails(folder: Folder, capsys: pytest.CaptureFixture[str]) -> None:
    (folder.run / "ledger.witness.json").unlink()

    for anchors in ([], ["--key", str(folder.auditor)]):
        code, out = _audit(folder, *anchors, capsys=capsys)
        assert (code, out["reason"]) == (1, MISSING_WITNESS), anchors


def test_deleted_key_and_witness_fail(folder: Folder, capsys: pytest.CaptureFixture[str]) -> None:
    (folder.run / "ledger.witness.json").unlink()
    (folder.run / "keys" / "server_signing.pub").unlink()

    for anchors in ([], ["--key", str(folder.auditor)]):
        code, out = _audit(folder, *anchors, capsys=capsys)
        assert (code, out["reason"]) == (1, MISSING_KEY), anchors


def test_witness_rebuilt_from_an_earlier_head_fails(
    folder: Folder, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: the witness of the first head, rebuilt from its head_signed entry
    with Ledger.open(folder.run / "ledger.sqlite") as led:
        first = next(e for e in led.entries() if e.kind == "head_signed")
    record = {
        "format": "fedsafe-ledger-witness-v1",
        "entry_seq": first.seq,
        "entry_hash": first.hash,
        **first.payload,
    }
    (folder.run / "ledger.witness.json").write_text(json.dumps(record), encoding="utf-8")

    code, out = _audit(folder, "--key", str(folder.auditor), capsys=capsys)

    assert (code, out["reason"]) == (1, STALE_WITNESS)


def test_a_replaced_site_key_with_reforged_attestation_fails(
    folder: Folder, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: the forger swaps cleveland's published key for its own (attestations re-signed
    # with it would verify against the folder); run_started enrolled the genuine fingerprint.
    forger = crypto.generate_signing_key()
    (folder.run / "keys" / "sites" / "cleveland.pub").write_bytes(forger[1])

    code, out = _audit(folder, "--key", str(folder.auditor), capsys=capsys)

    assert (code, out["status"]) == (1, "tampered")
    assert "run_started enrolled" in out["detail"]
