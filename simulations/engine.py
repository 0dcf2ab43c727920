"""Run one federation in Flower's simulation engine with the same apps deployment uses."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

from fedsafe.common.config import ExperimentConfig, to_dict
from fedsafe.common.errors import FedsafeError
from fedsafe.common.layout import coordinator_keys_dir, federation_sites
from fedsafe.common.privacy.plan_table import format_plan, plan_to_json
from fedsafe.server.checkpoint import checkpoint_to_resume
from fedsafe.simulations.planning import plan_simulation
from fedsafe.simulations.resources import backend_config

__all__ = ["simulate", "format_table", "write_config"]

log = logging.getLogger("fedsafe")


def write_config(cfg: ExperimentConfig, run_dir: Path) -> Path:
    """The resolved config, exactly what the apps ran with."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.json"
    path.write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _quiet_flower() -> None:
    """Flower logs every record at INFO; the operator wants fedsafe's one line per round.
    Alembic (which flwr.simulation imports) announces its plugins at INFO: quieted first."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import flwr.common.logger  # noqa: F401 - creates Flower's logger (DEBUG, own handler)

    flwr_log = logging.getLogger("flwr")
    flwr_log.setLevel(logging.WARNING)
    flwr_log.propagate = False
    flwr_log.addFilter(
        lambda record: "run_simulation` function is deprecated" not in record.getMessage()
    )


def simulate(cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """Build the ServerApp and ClientApp through their public builders and simulate all sites."""
    _quiet_flower()  # before flwr.simulation's import: it imports Alembic
    from flwr.simulation import run_simulation

    from fedsafe.client.app import build_client_app
    from fedsafe.server.app import build_server_app

    sites = federation_sites(cfg)
    if cfg.strategy.min_sites > len(sites):
        raise FedsafeError(
            f"strategy.min_sites={cfg.strategy.min_sites} but the federation has only "
            f"{len(sites)} site(s): {list(sites)}"
        )
    declared = {entry.site for entry in cfg.compliance.consent}
    if declared and not declared & set(sites):
        raise FedsafeError(
            f"compliance.consent names sites {sorted(declared)} but the federation's sites are "
            f"{list(sites)}: no site could take part. Declare their consent, or use federation=open"
        )
    # Fail before Ray starts, not after; the coordinator's own key verifies the checkpoint.
    public = coordinator_keys_dir(cfg) / "server_signing.pub"
    checkpoint_to_resume(cfg, run_dir, public.read_bytes() if public.is_file() else None)
    backend = backend_config(cfg, len(sites))  # refuses a GPU setting this machine cannot meet
    write_config(cfg, run_dir)
    if cfg.privacy.enabled:
        plan = plan_simulation(cfg, run_dir.name)
        (run_dir / "privacy_plan.json").write_text(json.dumps(plan_to_json(plan), indent=2) + "\n")
        print(format_plan(plan))
        for warning in plan.warnings:
            log.warning("privacy plan: %s", warning)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=build_server_app(cfg, run_dir),
            client_app=build_client_app(cfg),
            num_supernodes=len(sites),
            backend_config=backend,  # type: ignore[arg-type]
        )
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise FedsafeError(
            f"the simulation ended without writing {summary_path}; see the log above"
        )
    # A run in which no site trained raised NoSiteTrainedError in the ServerApp (re-raised here).
    summary: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
    return summary


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def format_table(summary: dict[str, Any]) -> str:
    """Per site: held-out accuracy, AUROC and the cumulative epsilon it spent (at its delta)."""
    head = (
        f"{'site':<16}{'n test':>7}{'accuracy':>10}{'bal.acc':>9}{'AUROC':>8}"
        f"{'epsilon':>9}{'delta':>9}{'steps':>7}{'refused':>8}"
    )
    lines = [head, "-" * len(head)]
    for name, s in summary["sites"].items():
        lines.append(
            f"{name:<16}{_fmt(s['num_test'], '.0f'):>7}{_fmt(s['accuracy']):>10}"
            f"{_fmt(s['balanced_accuracy']):>9}"
            f"{_fmt(s['auroc']):>8}{_fmt(s['epsilon'], '.3f'):>9}{_fmt(s['delta'], '.0e'):>9}"
            f"{s['steps']:>7}{len(s['refusals']):>8}"
        )
    g = summary["global"]
    lines.append("-" * len(head))
    lines.append(
        f"{'pooled':<16}{'':>7}{_fmt(g['accuracy']):>10}{_fmt(g['balanced-accuracy']):>9}"
        f"{_fmt(g['auroc']):>8}"
    )
    if summary.get("fairness"):
        f = summary["fairness"]
        ci = f.get("gap_ci95")
        interval = f", 95% CI {ci[0]:.3f} to {ci[1]:.3f}" if ci else ""
        lines.append(
            f"fairness: accuracy gap {f['gap']:.3f}{interval} "
            f"(best {f['best_site']}, worst {f['worst_site']}); "
            f"mean of the sites' accuracies {f['mean']:.3f}"
        )
    rule = ((summary.get("config") or {}).get("training") or {}).get("decision_rule", "argmax")
    if rule != "argmax":
        divisor = "the declared prevalence" if rule == "prevalence" else "the model's mean p(c)"
        lines.append(f"decision rule: {rule} (argmax of p(c|x) / {divisor} on each site's rows)")
    if not summary["privacy"]["enabled"]:
        lines.append("privacy: OFF (no differential privacy guarantee)")
    if summary.get("client_level"):
        c = summary["client_level"]
        lines.append(
            f"client-level DP ({c['mode']}): epsilon {c['epsilon']:.3f} at delta {c['delta']:g} "
            f"after {c['releases']} release(s), noise multiplier {c['noise_multiplier']:.3f}, "
            f"update clipped to {c['clipping_norm']:g} (each site's whole contribution)"
        )
    if summary.get("stopped_early"):
        lines.append(f"stopped early: {summary['stopped_early']}")
    lines.append(
        f"rounds {summary['rounds_completed']}/{summary['rounds_planned']}, "
        f"{_fmt(summary['seconds_per_round'], '.1f')} s per round, "
        f"wall {summary['wall_time_s']:.1f} s"
    )
    return "\n".join(lines)
