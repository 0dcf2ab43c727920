"""Every number of a run report, gathered into one plain dict (what report.json holds)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedsafe.common.ledger.audit import Anchors
from fedsafe.common.report.findings import findings
from fedsafe.common.report.inputs import clean_numbers, file_sha256, read_metrics, read_summary
from fedsafe.common.report.ledger_facts import NO_LEDGER, check_ledger, read_ledger

__all__ = [
    "REPORT_FORMAT",
    "STATUSES",
    "build_run_report",
]

REPORT_FORMAT = "fedsafe-run-report-v1"
STATUSES = ("trained", "refused", "dropped", "not selected")
_UTILITY = {
    "accuracy": "accuracy",
    "balanced-accuracy": "balanced_accuracy",
    "auroc": "auroc",
    "loss": "loss",
}


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _decision_rule(summary: dict[str, Any]) -> str | None:
    """How the sites turned probabilities into decisions (`training.decision_rule` of the run's
    config): a risk officer reads the accuracy figures against it. Text from a file, or None."""
    config = summary.get("config")
    training = config.get("training") if isinstance(config, dict) else None
    return _text(training.get("decision_rule")) if isinstance(training, dict) else None


def _rounds(rows: Iterable[dict[str, Any]]) -> list[int]:
    return sorted({r for row in rows if (r := _int(row.get("round"))) is not None})


def _utility(metrics: list[dict[str, Any]], phase: str, site: str | None) -> list[dict[str, Any]]:
    out = []
    for row in metrics:
        if row.get("phase") != phase or (site is not None and row.get("site") != site):
            continue
        if _int(row.get("round")) is None:
            continue
        point: dict[str, Any] = {"round": _int(row.get("round"))}
        point |= {name: _float(row.get(key)) for key, name in _UTILITY.items()}
        out.append(point)
    return sorted(out, key=lambda p: p["round"])


def _refusals(
    summary_site: dict[str, Any], metrics: list[dict[str, Any]], site: str
) -> list[dict[str, Any]]:
    """Site refusals from summary.json and metrics.jsonl, one per (round, reason)."""
    seen: dict[tuple[Any, Any], dict[str, Any]] = {}
    raw = summary_site.get("refusals")
    listed: list[Any] = raw if isinstance(raw, list) else []
    candidates = [r for r in listed if isinstance(r, dict)]
    candidates += [r for r in metrics if r.get("phase") == "refused" and r.get("site") == site]
    for row in candidates:
        item = {
            "round": _int(row.get("round")),
            "code": row.get("code"),
            "reason": row.get("reason"),
        }
        seen.setdefault((item["round"], item["reason"]), item)
    return sorted(seen.values(), key=lambda r: (r["round"] or 0, str(r["reason"])))


def _site(
    name: str,
    summary: dict[str, Any],
    metrics: list[dict[str, Any]],
    ledger: dict[str, Any] | None,
) -> dict[str, Any]:
    s = summary.get("sites", {}).get(name) or {}
    privacy = summary.get("privacy") or {}
    train = [r for r in metrics if r.get("phase") == "train" and r.get("site") == name]
    attested = [a for a in (ledger or {}).get("attestations", []) if a.get("site") == name]
    by_round_attested = {
        _int(a.get("round")): _float(a.get("epsilon")) for a in attested if not a.get("refused")
    }
    series = {_int(r.get("round")): _float(r.get("epsilon")) for r in train}
    rounds = sorted(k for k in set(series) | set(by_round_attested) if k is not None)
    epsilon_by_round = [
        {"round": r, "epsilon": series.get(r), "attested_epsilon": by_round_attested.get(r)}
        for r in rounds
    ]
    final = _float(s.get("epsilon"))
    if final is None and train:
        final = _float(max(train, key=lambda r: _int(r.get("round")) or 0).get("epsilon"))
    cap = _float(s.get("cap"))
    last_attested = next(
        (a for a in sorted(attested, key=lambda a: a["seq"], reverse=True) if not a.get("refused")),
        None,
    )
    joined = s.get("rounds_trained")
    rounds_joined = (
        sorted(int(r) for r in joined if _int(r) is not None)
        if isinstance(joined, list)
        else _rounds(train)
    )
    consent = [c for c in (ledger or {}).get("consent", []) if c.get("site") == name]
    return {
        "epsilon_by_round": epsilon_by_round,
        "cap": cap,
        "cap_fraction": final / cap if final is not None and cap else None,
        "final_epsilon": final,
        "attested_final_epsilon": _float(last_attested.get("epsilon")) if last_attested else None,
        "delta": _float(s.get("delta")),
        "accountant": s.get("accountant") or privacy.get("accountant"),
        "noise_multiplier": _float(s.get("noise_multiplier")),
        "max_grad_norm": _float(s.get("max_grad_norm", privacy.get("max_grad_norm"))),
        "sample_rate": _float(s.get("sample_rate")),
        "steps": _int(s.get("steps")),
        "attested_steps": sum(_int(a.get("steps")) or 0 for a in attested if not a.get("refused"))
        if attested
        else None,
        "rounds_joined": rounds_joined,
        "refusals": _refusals(s, metrics, name),
        "consent_refusals": [c for c in consent if c.get("decision") != "granted"],
        "legal_basis": next((c["legal_basis"] for c in consent if c.get("legal_basis")), None),
        "num_train": _float(s.get("num_train")),
        "num_test": _float(s.get("num_test")),
        "accuracy": _float(s.get("accuracy")),
        "balanced_accuracy": _float(s.get("balanced_accuracy")),
        "auroc": _float(s.get("auroc")),
        "loss": _float(s.get("loss")),
        # What the site signed (ledger), else what the summary says: its evaluation release
        # policy and where its DP noise came from ("seeded-test-only" is not private).
        "release_policy": _text((last_attested or {}).get("release"))
        or _text(s.get("release_policy")),
        "randomness": _text((last_attested or {}).get("randomness")) or _text(s.get("randomness")),
    }


def _participation(
    sites: dict[str, dict[str, Any]],
    metrics: list[dict[str, Any]],
    ledger: dict[str, Any] | None,
    last_round: int,
) -> dict[str, Any]:
    """A site x round grid; a cell holds its status and the reason when there is one."""
    grid: dict[str, dict[int, dict[str, Any]]] = {
        s: {r: {"status": "not selected"} for r in range(1, last_round + 1)} for s in sites
    }

    def mark(site: Any, rnd: Any, status: str, reason: Any = None) -> None:
        r = _int(rnd)
        if site not in grid or r is None or r not in grid[site]:
            return
        rank = {"trained": 3, "dropped": 2, "refused": 1, "not selected": 0}
        current = grid[site][r]
        if rank[status] > rank[current["status"]]:
            grid[site][r] = {"status": status, **({"reason": reason} if reason else {})}
        elif rank[status] == rank[current["status"]] and reason and not current.get("reason"):
            current["reason"] = reason

    for name, site in sites.items():
        for refusal in site["refusals"] + site["consent_refusals"]:
            mark(name, refusal.get("round"), "refused", refusal.get("reason"))
    facts = ledger or {}
    for a in facts.get("attestations", []):
        mark(a.get("site"), a.get("round"), "refused" if a.get("refused") else "trained")
    for d in facts.get("dropouts", []):
        mark(d.get("site"), d.get("round"), "dropped", d.get("reason"))
    for name, site in sites.items():
        for rnd in site["rounds_joined"]:
            mark(name, rnd, "trained")
    for row in metrics:
        if row.get("phase") == "train":
            mark(row.get("site"), row.get("round"), "trained")
    counts = {
        name: {status: sum(c["status"] == status for c in cells.values()) for status in STATUSES}
        for name, cells in grid.items()
    }
    return {
        "rounds": list(range(1, last_round + 1)),
        "grid": {s: {str(r): cell for r, cell in cells.items()} for s, cells in grid.items()},
        "counts": counts,
        "dropouts": facts.get("dropouts", []),
        "consent": facts.get("consent", []),
    }


def _manifest(
    run_dir: Path,
    summary: dict[str, Any],
    ledger: dict[str, Any] | None,
    sites: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    started = (ledger or {}).get("run_started")
    finished = (ledger or {}).get("run_finished") or {}
    model = summary.get("model") or {}
    legal = {name: site["legal_basis"] for name, site in sites.items()}
    consent_summary = summary.get("consent")
    if isinstance(consent_summary, dict):
        for name, record in consent_summary.items():
            if legal.get(name) is None and isinstance(record, dict):
                legal[name] = record.get("legal_basis")
    on_disk = file_sha256(run_dir / str(model.get("path") or "model.pt"))
    common = {
        "run_name": summary.get("run"),
        "dataset": summary.get("dataset"),
        "legal_basis": legal,
        "model_file_sha256": on_disk,
        "summary_model_sha256": model.get("sha256"),
    }
    if started is not None:
        return common | {
            "source": "ledger",
            "run_id": started.get("run_id"),
            "purpose": started.get("purpose"),
            "code_version": started.get("code_version"),
            "config_hash": started.get("config_hash"),
            "strategy": started.get("strategy"),
            "secure_aggregation": started.get("secure_aggregation"),
            "privacy": started.get("privacy"),
            "started_at": started.get("time"),
            "finished_at": finished.get("time"),
            "rounds_completed": finished.get("rounds_completed"),
            "final_model_sha256": finished.get("final_model_sha256"),
        }
    config_hash = summary.get("config_hash") or file_sha256(run_dir / "config.json")
    return common | {
        "source": "summary.json",
        "note": NO_LEDGER if ledger is None else "the ledger holds no run_started entry",
        "run_id": summary.get("run_id") or summary.get("run"),
        "purpose": summary.get("purpose"),
        "code_version": summary.get("code_version"),
        "config_hash": config_hash,
        "config_hash_of": "summary.json config_hash"
        if summary.get("config_hash")
        else "config.json (file bytes)",
        "strategy": summary.get("strategy"),
        "secure_aggregation": summary.get("secure_aggregation"),
        "privacy": summary.get("privacy"),
        "rounds_completed": summary.get("rounds_completed"),
        "final_model_sha256": model.get("sha256"),
    }


def build_run_report(
    run_dir: Path, *, now: datetime | None = None, anchors: Anchors | None = None
) -> dict[str, Any]:
    """Gather a run folder into one dict: summary, per-site privacy, utility, grid, ledger.

    The ledger is verified here, at report time; every figure says where it came from.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    metrics, notes = read_metrics(run_dir)
    ledger_check = check_ledger(run_dir, anchors)
    facts = read_ledger(run_dir)
    if facts is not None and facts.get("read_error"):
        notes.append(f"the ledger could not be read completely: {facts['read_error']}")
    names = set(summary.get("sites") or {})
    names |= {str(r["site"]) for r in metrics if r.get("site") and r.get("phase") != "global"}
    for key in ("attestations", "consent", "dropouts"):
        names |= {str(x["site"]) for x in (facts or {}).get(key, []) if x.get("site")}
    sites = {name: _site(name, summary, metrics, facts) for name in sorted(names)}
    seen = _rounds(metrics)
    for key in ("attestations", "consent", "dropouts"):
        seen += _rounds((facts or {}).get(key, []))
    last_round = max([_int(summary.get("rounds_completed")) or 0, *seen])
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "generated_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        "run": {
            "name": summary.get("run"),
            "dataset": summary.get("dataset"),
            "strategy": summary.get("strategy"),
            "rounds_planned": summary.get("rounds_planned"),
            "rounds_completed": summary.get("rounds_completed"),
            "stopped_early": summary.get("stopped_early"),
            "wall_time_s": summary.get("wall_time_s"),
            "decision_rule": _decision_rule(summary),
        },
        "privacy": summary.get("privacy") or {},
        "client_level": summary.get("client_level"),
        "sites": sites,
        "utility": {
            "global": _utility(metrics, "global", None),
            "final_global": summary.get("global"),
            "sites": {name: _utility(metrics, "evaluate", name) for name in sites},
        },
        "fairness": summary.get("fairness"),
        "participation": _participation(sites, metrics, facts, last_round),
        "manifest": _manifest(run_dir, summary, facts, sites),
        "ledger": ledger_check,
        "ledger_entries": {
            k: (facts or {}).get(k) for k in ("entries", "errors", "aggregated", "resumed")
        }
        if facts
        else None,
        "attestations_in_summary": summary.get("attestations"),
        "notes": notes,
    }
    report["findings"] = findings(report)
    return clean_numbers(report)
