"""report.json carries exactly the ledger's, summary's and metrics' numbers (parsed back)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _report_run import CAPS, PURPOSE, BuiltRun

from fedsafe.common.ledger import Ledger
from fedsafe.common.ledger.audit import Anchors
from fedsafe.simulations.report_cli import write_report


def _report(run: BuiltRun) -> dict[str, Any]:
    html = write_report(run.path, anchors=Anchors(server_key=run.auditor_key))
    assert html == run.path / "report.html"
    return json.loads((run.path / "report.json").read_text(encoding="utf-8"))


def _entries(run: BuiltRun, kind: str) -> list[dict[str, Any]]:
    with Ledger.open(run.path / "ledger.sqlite") as ledger:
        return [e.payload for e in ledger.entries() if e.kind == kind]


def test_site_privacy_numbers_equal_summary(built_run: BuiltRun) -> None:
    report = _report(built_run)

    for name, expected in built_run.summary["sites"].items():
        site = report["sites"][name]
        assert site["final_epsilon"] == expected["epsilon"]
        assert site["delta"] == expected["delta"]
        assert site["noise_multiplier"] == expected["noise_multiplier"]
        assert site["sample_rate"] == expected["sample_rate"]
        assert site["steps"] == expected["steps"]
        assert site["rounds_joined"] == expected["rounds_trained"]
        assert site["cap"] == expected.get("cap")
        assert site["accountant"] == built_run.summary["privacy"]["accountant"]
        assert site["max_grad_norm"] == built_run.summary["privacy"]["max_grad_norm"]
        assert [r["reason"] for r in site["refusals"]] == [
            r["reason"] for r in expected["refusals"]
        ]
    assert report["sites"]["cleveland"]["cap_fraction"] == (
        built_run.summary["sites"]["cleveland"]["epsilon"] / CAPS["cleveland"]
    )
    assert report["fairness"] == built_run.summary["fairness"]
    assert report["utility"]["final_global"] == built_run.summary["global"]


def test_per_round_numbers_equal_metrics(built_run: BuiltRun) -> None:
    report = _report(built_run)

    for name in built_run.summary["sites"]:
        train = [m for m in built_run.metrics if m["phase"] == "train" and m["site"] == name]
        assert [(p["round"], p["epsilon"]) for p in report["sites"][name]["epsilon_by_round"]] == [
            (m["round"], m["epsilon"]) for m in train
        ]
        evaluate = [m for m in built_run.metrics if m["phase"] == "evaluate" and m["site"] == name]
        assert [p["accuracy"] for p in report["utility"]["sites"][name]] == [
            m["accuracy"] for m in evaluate
        ]
    glob = [m for m in built_run.metrics if m["phase"] == "global"]
    assert [(p["round"], p["auroc"]) for p in report["utility"]["global"]] == [
        (m["round"], m["auroc"]) for m in glob
    ]


def test_attested_numbers_equal_ledger(built_run: BuiltRun) -> None:
    report = _report(built_run)

    for payload in _entries(built_run, "attestation"):
        signed = payload["signed"]
        if signed["refused"]:
            continue
        points = report["sites"][signed["site"]]["epsilon_by_round"]
        (point,) = [p for p in points if p["round"] == signed["round"]]
        assert point["attested_epsilon"] == signed["epsilon"]
    for name, site in report["sites"].items():
        assert site["attested_final_epsilon"] == site["final_epsilon"]
        attested = [
            p["signed"]["steps"]
            for p in _entries(built_run, "attestation")
            if p["site"] == name and not p["signed"]["refused"]
        ]
        assert site["attested_steps"] == sum(attested) == site["steps"]


def test_manifest_equals_ledger_run_entries(built_run: BuiltRun) -> None:
    report = _report(built_run)
    (started,) = _entries(built_run, "run_started")
    (finished,) = _entries(built_run, "run_finished")

    manifest = report["manifest"]
    assert manifest["source"] == "ledger"
    for key in ("run_id", "purpose", "code_version", "config_hash", "strategy"):
        assert manifest[key] == started[key]
    assert manifest["secure_aggregation"] is started["secure_aggregation"]
    assert manifest["privacy"] == started["privacy"]
    assert manifest["purpose"] == PURPOSE
    assert manifest["final_model_sha256"] == finished["final_model_sha256"]
    assert manifest["model_file_sha256"] == finished["final_model_sha256"]
    assert manifest["rounds_completed"] == finished["rounds_completed"]
    # An explicit legal_basis key wins; otherwise it is read from the granted reason.
    assert manifest["legal_basis"] == {
        "cleveland": "GDPR Art. 9(2)(j) research",
        "hungary": "GDPR Art. 6(1)(e)",
        "switzerland": "FADP Art. 31",
    }


def test_consent_dropouts_and_grid_equal_ledger(built_run: BuiltRun) -> None:
    report = _report(built_run)
    part = report["participation"]

    consent = _entries(built_run, "consent_decision")
    assert [(c["site"], c["round"], c["decision"], c["reason"]) for c in part["consent"]] == [
        (c["site"], c["round"], c["decision"], c["reason"]) for c in consent
    ]
    assert [(d["site"], d["round"]) for d in part["dropouts"]] == [
        (d["site"], d["round"]) for d in _entries(built_run, "dropout")
    ]
    grid = {s: {r: c["status"] for r, c in cells.items()} for s, cells in part["grid"].items()}
    assert grid == {
        "cleveland": {"1": "trained", "2": "trained", "3": "trained"},
        "hungary": {"1": "trained", "2": "refused", "3": "trained"},
        "switzerland": {"1": "trained", "2": "refused", "3": "dropped"},
    }
    assert part["counts"]["switzerland"] == {
        "trained": 1,
        "refused": 1,
        "dropped": 1,
        "not selected": 0,
    }


def test_ledger_verification_is_computed_now(built_run: BuiltRun) -> None:
    with Ledger.open(built_run.path / "ledger.sqlite") as ledger:
        count, head = len(ledger), ledger.head()
    assert head is not None

    report = _report(built_run)

    ledger_result = report["ledger"]
    assert ledger_result["status"] == "intact"
    assert ledger_result["entries_checked"] == count
    assert ledger_result["last_hash"] == head.hash
    assert ledger_result["attestations_checked"] == len(_entries(built_run, "attestation"))
    assert ledger_result["signed_heads"] == 1
    used = ledger_result["checked_with"]
    assert used["server key"] == str(built_run.auditor_key)
    assert used["site keys"] == ["cleveland", "hungary", "switzerland"]
    assert used["run folder key"] and used["run folder witness"]


def test_findings_flag_near_cap_refusal_and_dropout(built_run: BuiltRun) -> None:
    report = _report(built_run)

    texts = [(f["level"], f["text"]) for f in report["findings"]]
    assert ("warn", "cleveland is near its privacy cap: epsilon 2.971 of 3.5 (85%).") in texts
    assert any(level == "warn" and "hungary refused 1 round" in t for level, t in texts)
    assert any(
        level == "warn" and "switzerland was excluded from round 2" in t for level, t in texts
    )
    assert any(level == "warn" and "1 dropout" in t for level, t in texts)
    assert any(level == "ok" and t.startswith("Ledger intact") for level, t in texts)


def test_without_ledger_the_manifest_comes_from_summary(plain_run: BuiltRun) -> None:
    report = _report(plain_run)

    assert report["ledger"] == {
        "present": False,
        "status": "absent",
        "message": "no ledger in this run folder",
    }
    manifest = report["manifest"]
    assert manifest["source"] == "summary.json"
    assert manifest["note"] == "no ledger in this run folder"
    assert manifest["strategy"] == plain_run.summary["strategy"]
    assert manifest["final_model_sha256"] == plain_run.summary["model"]["sha256"]
    html = (plain_run.path / "report.html").read_text(encoding="utf-8")
    assert "no ledger in this run folder" in html


def test_out_option_puts_json_beside_the_html(built_run: BuiltRun, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "dpo.html"

    written = write_report(built_run.path, out)

    assert written == out and out.is_file()
    assert json.loads(out.with_suffix(".json").read_text())["format"] == "fedsafe-run-report-v1"


def test_each_sites_signed_release_policy_and_noise_source_are_reported(
    built_run: BuiltRun,
) -> None:
    report = _report(built_run)
    for site in report["sites"].values():
        assert site["release_policy"] == "rounded" and site["randomness"] == "os-csprng"
    texts = [f["text"] for f in report["findings"]]
    assert any("released under each site's own policy" in t for t in texts)
    assert not any("NOT PRIVATE" in t for t in texts)


def test_a_site_that_used_the_test_seed_is_marked_not_private(tmp_path: Path) -> None:
    from _report_run import build_seeded_run

    run = build_seeded_run(tmp_path / "run", "cleveland")
    report = _report(run)
    assert report["sites"]["cleveland"]["randomness"] == "seeded-test-only"
    bad = [f for f in report["findings"] if f["level"] == "bad"]
    assert any("NOT PRIVATE: cleveland" in f["text"] for f in bad)
    assert "NOT PRIVATE (test seed)" in (run.path / "report.html").read_text(encoding="utf-8")


def test_the_fairness_gap_ci_and_the_decision_rule_are_in_the_html(built_run: BuiltRun) -> None:
    report = _report(built_run)
    html = (built_run.path / "report.html").read_text(encoding="utf-8")
    assert report["run"]["decision_rule"] == "balanced"
    assert "95% CI 0.010 to 0.420" in " ".join(html.split())
    assert "Decision rule (<code>training.decision_rule</code>): balanced." in html
