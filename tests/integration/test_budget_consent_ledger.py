"""Real simulations: a site's cap binds, a withdrawal excludes, budgets persist, ledger verifies."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fedsafe.client.budget import BudgetStore
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.layout import simulated_site_dir
from fedsafe.common.ledger import Ledger, provenance_card
from fedsafe.common.privacy import epsilon_for
from fedsafe.simulations.cli import main as fedsafe
from fedsafe.simulations.engine import simulate

pytestmark = pytest.mark.slow

CONSENT = [
    {
        "site": "cleveland",
        "purposes": ["cardiology-research"],
        "legal_basis": "HIPAA limited data set",
        "jurisdiction": "US",
    },
    {
        "site": "hungary",
        "purposes": ["cardiology-research"],
        "legal_basis": "GDPR Art. 6(1)(e) + 9(2)(j)",
        "jurisdiction": "EU",
        "withdraw_at_round": 2,
    },
    {
        "site": "switzerland",
        "purposes": ["cardiology-research"],
        "legal_basis": "HRA Art. 34",
        "jurisdiction": "CH",
    },
    {
        "site": "va_long_beach",
        "purposes": ["cardiology-research"],
        "legal_basis": "HIPAA limited data set",
        "jurisdiction": "US",
    },
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("runs")
    first = from_dict(
        ExperimentConfig,
        {
            "name": "capped",
            "runs_dir": str(base),
            "training": {"rounds": 3},
            "strategy": {"min_sites": 3},
            "federation": {"caps": {"switzerland": 2.3}},
            "compliance": {"consent": CONSENT},
        },
    )
    second = from_dict(
        ExperimentConfig, {"name": "again", "runs_dir": str(base), "training": {"rounds": 2}}
    )
    out: dict[str, Any] = {"base": base, "first_cfg": first, "second_cfg": second}
    out["first"] = simulate(first, base / "capped")
    out["second"] = simulate(second, base / "again")
    return out


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_tight_cap_makes_the_site_refuse_and_never_exceed_it(runs: dict[str, Any]) -> None:
    swiss = runs["first"]["sites"]["switzerland"]
    assert swiss["rounds_trained"] == [1]
    assert swiss["refusals"] and swiss["refusals"][0]["round"] == 2
    assert "cap" in swiss["refusals"][0]["reason"]
    assert swiss["epsilon"] <= swiss["cap"] == 2.3


def test_a_withdrawal_excludes_the_site_from_the_next_round(runs: dict[str, Any]) -> None:
    hungary = runs["first"]["sites"]["hungary"]
    assert hungary["rounds_trained"] == [1]
    assert [e["round"] for e in hungary["exclusions"]] == [2]
    decisions = [d for d in runs["first"]["consent"] if d["site"] == "hungary"]
    assert [(d["round"], d["decision"]) for d in decisions] == [(1, "granted"), (2, "withdrawn")]


def test_too_few_sites_stops_the_run_cleanly(runs: dict[str, Any]) -> None:
    first = runs["first"]
    assert first["stopped_early"]["round"] == 2
    assert "fewer than min_sites=3" in first["stopped_early"]["reason"]
    assert (runs["base"] / "capped" / "model.safetensors").exists()


def test_budgets_persist_across_runs_and_match_the_store(runs: dict[str, Any]) -> None:
    cfg: ExperimentConfig = runs["second_cfg"]
    for site, after in runs["second"]["sites"].items():
        before = runs["first"]["sites"][site]["epsilon"]
        assert after["epsilon"] > before, site
        store = BudgetStore.open(simulated_site_dir(cfg, site, "again") / "budget.sqlite")
        history = store.history(f"heart_disease/{site}")
        assert after["epsilon"] == pytest.approx(epsilon_for(history, delta=1e-5))
        assert after["epsilon"] == pytest.approx(
            store.spent(f"heart_disease/{site}", delta=1e-5, accountant="rdp")
        )
        store.close()


def test_the_ledger_of_a_real_run_verifies_and_carries_the_story(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = runs["base"] / "capped"
    assert fedsafe(["audit", "verify", str(run_dir), "--json"]) == 3  # no independent key
    assert json.loads(capsys.readouterr().out)["status"] == "unverifiable"
    coordinator_key = runs["base"] / "coordinator" / "keys" / "server_signing.pub"
    assert fedsafe(["audit", "verify", str(run_dir), "--key", str(coordinator_key), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["attestations_checked"] == 4 + 2 and result["signed_heads"] >= 3
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        card = provenance_card(ledger)
    assert card["purpose"] == "cardiology-research"
    kinds = [e.kind for e in Ledger.open(run_dir / "ledger.sqlite").entries()]
    assert kinds[0] == "run_started" and "dropout" in kinds and kinds[-1] == "head_signed"


def test_a_tampered_ledger_copy_fails_and_names_the_entry(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(runs["base"] / "capped", copy)
    con = sqlite3.connect(copy / "ledger.sqlite")
    seq, payload = con.execute(
        "select seq, payload from ledger_entries where kind='attestation' order by seq limit 1"
    ).fetchone()
    con.execute(
        "update ledger_entries set payload=? where seq=?",
        (payload.replace('"refused":false', '"refused":true'), seq),
    )
    con.commit()
    con.close()
    assert fedsafe(["audit", "verify", str(copy), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["first_bad_entry"] == seq and "payload edited" in result["reason"]
