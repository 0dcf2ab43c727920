"""Central DP in a real simulation: every release is accounted, in the ledger and the summary,
exactly as an independent accountant computes it; the run's client-level cap stops it in time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opacus.accountants import RDPAccountant

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.ledger import Ledger
from fedsafe.common.privacy.client_level import ClientLevelAccount
from fedsafe.common.report import build_run_report, render_run_html
from fedsafe.simulations.engine import simulate

pytestmark = pytest.mark.slow

NOISE = 1.5
DELTA = 1e-5


def _reference(releases: int) -> float:
    accountant = RDPAccountant()
    accountant.history = [(NOISE, 1.0, releases)]
    return float(accountant.get_epsilon(delta=DELTA))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], float]:
    cap = (_reference(2) + _reference(3)) / 2  # room for two releases, not three
    runs = tmp_path_factory.mktemp("runs")
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "central",
            "runs_dir": str(runs),
            "training": {"rounds": 4},
            "federation": {"fresh_budget": True},
            "privacy": {
                "client_level": {
                    "mode": "central",
                    "target_epsilon": None,
                    "noise_multiplier": NOISE,
                    "clipping_norm": 0.5,
                    "max_epsilon": cap,
                }
            },
        },
    )
    run_dir = runs / "central-run"
    return run_dir, simulate(cfg, run_dir), cap


def test_the_summary_accounts_every_release_as_opacus_does(
    run: tuple[Path, dict[str, Any], float],
) -> None:
    _, summary, cap = run
    c = summary["client_level"]
    assert c["mode"] == "central" and c["releases"] == 2
    assert c["epsilon"] == pytest.approx(_reference(2), rel=1e-9)
    assert c["epsilon"] <= cap < _reference(3)
    assert summary["stopped_early"]["round"] == 3
    assert "past privacy.client_level.max_epsilon" in summary["stopped_early"]["reason"]
    # Sample-level DP ran as well: every site attests its own epsilon beside it.
    assert all(site["epsilon"] > 0 for site in summary["sites"].values())


def test_the_ledger_records_each_release_with_uniform_weights(
    run: tuple[Path, dict[str, Any], float],
) -> None:
    run_dir, _, _ = run
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        aggregated = [e.payload for e in ledger.entries() if e.kind == "round_aggregated"]
    assert [a["round"] for a in aggregated] == [1, 2]
    for release, entry in enumerate(aggregated, start=1):
        level = entry["client_level"]
        assert level["releases"] == release
        assert level["epsilon"] == pytest.approx(_reference(release), rel=1e-9)
        k = len(entry["sites"])
        assert level["noise_std"] == pytest.approx(NOISE * 0.5 / k)
        assert set(entry["weights"].values()) == {1.0}


def test_the_plan_and_the_report_show_the_client_level_figures(
    run: tuple[Path, dict[str, Any], float],
) -> None:
    run_dir, _, cap = run
    plan = json.loads((run_dir / "privacy_plan.json").read_text())
    planned = ClientLevelAccount(
        mode="central",
        noise_multiplier=NOISE,
        clipping_norm=0.5,
        delta=DELTA,
        accountant="rdp",
        planned_rounds=4,
    )
    assert plan["client_level"]["epsilon_planned"] == pytest.approx(planned.epsilon(4))
    assert plan["client_level"]["max_epsilon"] == pytest.approx(cap)
    report = build_run_report(run_dir)
    assert report["client_level"]["epsilon"] == pytest.approx(_reference(2), rel=1e-9)
    html = render_run_html(report)
    assert "Client-level privacy" in html and f"{_reference(2):.3f}" in html
