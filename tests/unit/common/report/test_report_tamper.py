"""A tampered or unverifiable ledger is named at the top of the report, and the CLI exits 1."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

from _report_run import BuiltRun
from sqlalchemy import create_engine, text

from fedsafe.common import crypto
from fedsafe.common.ledger import Ledger
from fedsafe.simulations.report_cli import add_report_parser


def _sql(run: BuiltRun, statement: str, **params: object) -> None:
    engine = create_engine(f"sqlite:///{run.path / 'ledger.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text(statement), params)
    engine.dispose()


def _first_attestation_seq(run: BuiltRun) -> int:
    engine = create_engine(f"sqlite:///{run.path / 'ledger.sqlite'}")
    with engine.connect() as conn:
        seq = conn.execute(
            text("SELECT min(seq) FROM ledger_entries WHERE kind = 'attestation'")
        ).scalar_one()
    engine.dispose()
    return int(seq)


def _cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="fedsafe")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _edit_epsilon(run: BuiltRun, seq: int) -> None:
    """Lower a site's attested epsilon behind the ledger's back, as an insider might."""
    engine = create_engine(f"sqlite:///{run.path / 'ledger.sqlite'}")
    with engine.connect() as conn:
        payload = conn.execute(
            text("SELECT payload FROM ledger_entries WHERE seq = :s"), {"s": seq}
        ).scalar_one()
    engine.dispose()
    edited = json.loads(payload)
    edited["signed"]["epsilon"] = 0.5
    _sql(run, "UPDATE ledger_entries SET payload = :p WHERE seq = :s", p=json.dumps(edited), s=seq)


def test_edited_payload_is_reported_at_the_top_in_red(built_run: BuiltRun) -> None:
    seq = _first_attestation_seq(built_run)
    _edit_epsilon(built_run, seq)

    code, out, err = _cli(str(built_run.path))

    assert code == 1
    assert "report.html" in out
    assert f"LEDGER TAMPERED: ledger entry {seq}: payload edited" in err
    report = json.loads((built_run.path / "report.json").read_text())
    assert report["ledger"]["status"] == "tampered"
    assert report["ledger"]["first_bad_seq"] == seq
    assert report["ledger"]["first_bad_entry"]["kind"] == "attestation"
    assert report["findings"][0]["level"] == "bad"
    assert report["findings"][0]["text"].startswith(
        f"LEDGER TAMPERED: first bad entry is seq {seq}"
    )
    html = (built_run.path / "report.html").read_text(encoding="utf-8")
    body = html[html.index("<body>") :]
    banner = re.search(r'<div class="banner" role="alert" id="ledger-alert">(.*?)</div>', body)
    assert banner is not None
    assert body.index(banner.group(0)) < body.index("<h1>")  # above everything else
    assert f"the first bad entry is seq {seq} (attestation" in banner.group(1)
    assert ".banner { border: 3px solid var(--bad)" in html and "--bad: #b00020" in html


def test_entries_cut_from_the_end_are_caught_by_the_witness(built_run: BuiltRun) -> None:
    _sql(built_run, "DELETE FROM ledger_entries WHERE seq >= 20")

    code, _, err = _cli(str(built_run.path))

    assert code == 1
    report = json.loads((built_run.path / "report.json").read_text())
    assert report["ledger"]["status"] == "tampered"
    assert report["ledger"]["first_bad_seq"] == 20
    assert "truncated" in report["ledger"]["reason"]
    assert "LEDGER TAMPERED" in err


def test_unreadable_witness_makes_the_ledger_unverifiable(built_run: BuiltRun) -> None:
    (built_run.path / "ledger.witness.json").write_text("not json", encoding="utf-8")

    code, _, err = _cli(str(built_run.path))

    assert code == 1
    assert "LEDGER UNVERIFIABLE" in err
    report = json.loads((built_run.path / "report.json").read_text())
    assert report["ledger"]["status"] == "unverifiable"
    html = (built_run.path / "report.html").read_text(encoding="utf-8")
    assert "LEDGER UNVERIFIABLE" in html


def test_intact_ledger_exits_zero(built_run: BuiltRun) -> None:
    code, out, err = _cli(str(built_run.path), "--key", str(built_run.auditor_key))

    assert (code, err) == (0, "")
    assert str(built_run.path / "report.html") in out
    report = json.loads((built_run.path / "report.json").read_text())
    assert report["ledger"]["status"] == "intact"


def test_without_an_independent_key_the_report_says_unverifiable(built_run: BuiltRun) -> None:
    code, _, err = _cli(str(built_run.path))

    assert code == 3
    assert "LEDGER UNVERIFIABLE" in err
    report = json.loads((built_run.path / "report.json").read_text())
    assert report["ledger"]["status"] == "unverifiable"
    texts = [f["text"] for f in report["findings"]]
    assert not any("intact" in t.lower() for t in texts)
    assert "LEDGER UNVERIFIABLE" in (built_run.path / "report.html").read_text(encoding="utf-8")


def test_forged_run_finished_after_the_last_head_is_never_intact(built_run: BuiltRun) -> None:
    # Arrange: a correctly hashed run_finished appended after the last signed head
    with Ledger.open(built_run.path / "ledger.sqlite") as led:
        head = led.head()
        assert head is not None
        led.append("run_finished", {"run_id": "heart-20250301", "rounds_completed": 99})

    for anchors in ([], ["--key", str(built_run.auditor_key)]):
        code, _, err = _cli(str(built_run.path), *anchors)

        assert code == 1
        report = json.loads((built_run.path / "report.json").read_text())
        assert (report["ledger"]["status"], report["ledger"]["first_bad_seq"]) == (
            "tampered",
            head.seq + 1,
        )
        assert "unsigned tail" in err


def test_key_replaced_by_a_forger_fails_against_the_auditors_key(built_run: BuiltRun) -> None:
    forger = crypto.generate_signing_key()
    (built_run.path / "keys" / "server_signing.pub").write_bytes(forger[1])

    code, _, err = _cli(str(built_run.path), "--key", str(built_run.auditor_key))

    assert code == 1 and "LEDGER TAMPERED" in err


def test_a_deleted_ledger_is_reported_missing_and_fails(built_run: BuiltRun) -> None:
    (built_run.path / "ledger.sqlite").unlink()

    code, _, err = _cli(str(built_run.path), "--key", str(built_run.auditor_key))

    assert code == 1
    assert "LEDGER MISSING" in err
    report = json.loads((built_run.path / "report.json").read_text())
    assert report["ledger"]["status"] == "missing"


def test_missing_summary_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = _cli(str(tmp_path))

    assert code == 2
    assert "has no summary.json" in err
    assert not (tmp_path / "report.html").exists()
