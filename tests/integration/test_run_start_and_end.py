"""Real simulations at the two ends of a run: sites that are slow to start are waited for (and
the wait is bounded); a run in which no site trained is an error, not a summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from sim_apps import run_apps

from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import FedsafeError
from fedsafe.simulations.engine import simulate

pytestmark = pytest.mark.slow

SITES = ("cleveland", "hungary", "switzerland", "va_long_beach")


def _slow_to_start(cfg: ExperimentConfig, markers: Path, delay_s: float) -> ClientApp:
    """The real site app, whose first answer at each site takes `delay_s` (a slow import)."""
    from fedsafe.client.app import build_client_app

    honest = build_client_app(cfg)
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        marker = markers / f"site-{context.node_config[keys.PARTITION_ID]}"
        if not marker.exists():
            time.sleep(delay_s)
            marker.touch()
        return honest(msg, context)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return honest(msg, context)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return honest(msg, context)

    return app


def test_sites_slower_to_start_than_the_roll_call_timeout_still_take_part(
    tmp_path: Path,
) -> None:
    from fedsafe.server.app import build_server_app

    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "slow",
            "runs_dir": str(tmp_path / "runs"),
            "training": {"rounds": 1},
            "federation": {"fresh_budget": True},
            "compliance": {"roll_call_timeout_s": 1.0, "start_patience_s": 120.0},
        },
    )
    markers = tmp_path / "markers"
    markers.mkdir()
    run_dir = tmp_path / "runs" / "slow-run"
    run_apps(
        build_server_app(cfg, run_dir), _slow_to_start(cfg, markers, delay_s=3.0), sites=len(SITES)
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(list(markers.iterdir())) == len(SITES)  # every site really was slow
    for site in SITES:
        assert summary["sites"][site]["rounds_trained"] == [1], site


def test_a_run_in_which_no_site_trained_is_an_error(tmp_path: Path) -> None:
    """Every site's consent covers another purpose: each is excluded, nothing is learned."""
    consent = [
        {"site": s, "purposes": ["marketing"], "legal_basis": "consent", "jurisdiction": "EU"}
        for s in SITES
    ]
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "nobody",
            "runs_dir": str(tmp_path),
            "training": {"rounds": 2},
            "federation": {"fresh_budget": True},
            "compliance": {"consent": consent},
        },
    )
    with pytest.raises(FedsafeError, match="no site trained in run nobody-run"):
        simulate(cfg, tmp_path / "nobody-run")
    assert (tmp_path / "nobody-run" / "ledger.sqlite").exists()  # kept for the post-mortem
