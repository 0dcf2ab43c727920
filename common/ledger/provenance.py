"""Provenance card of a run, derived only from ledger entries (verify the ledger first)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedsafe.common.errors import LedgerError
from fedsafe.common.ledger.records import (
    ATTESTATION,
    DROPOUT,
    ERROR,
    HEAD_SIGNED,
    ROUND_AGGREGATED,
    RUN_FINISHED,
    RUN_RESUMED,
    RUN_STARTED,
    Entry,
)
from fedsafe.common.ledger.store import Ledger

__all__ = ["RUN_FIELDS", "provenance_card"]

RUN_FIELDS = (
    "run_id",
    "purpose",
    "code_version",
    "config_hash",
    "strategy",
    "privacy",
    "secure_aggregation",
)


@dataclass
class _Site:
    rounds: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)
    epsilon: float | None = None
    delta: float | None = None
    steps: int = 0


@dataclass
class _Run:
    started: Entry
    resumed: list[dict[str, Any]] = field(default_factory=list)
    finished: Entry | None = None
    sites: dict[str, _Site] = field(default_factory=dict)
    dropouts: dict[int, set[str]] = field(default_factory=dict)
    aggregated: dict[int, list[str]] = field(default_factory=dict)
    errors: int = 0

    def add(self, entry: Entry) -> None:
        payload = entry.payload
        if entry.kind == ATTESTATION:
            self._attest(payload.get("signed", {}))
        elif entry.kind == DROPOUT and isinstance(payload.get("round"), int):
            self.dropouts.setdefault(payload["round"], set()).add(str(payload.get("site")))
        elif entry.kind == ROUND_AGGREGATED and isinstance(payload.get("round"), int):
            self.aggregated[payload["round"]] = sorted(payload.get("sites", []))
        elif entry.kind == ERROR:
            self.errors += 1
        elif entry.kind == RUN_RESUMED:
            self.resumed.append({"at": entry.time, "from_round": payload.get("from_round")})
        elif entry.kind == RUN_FINISHED:
            self.finished = entry

    def _attest(self, signed: dict[str, Any]) -> None:
        site, rnd = signed.get("site"), signed.get("round")
        if not isinstance(site, str) or not isinstance(rnd, int):
            return
        record = self.sites.setdefault(site, _Site())
        (record.refused if signed.get("refused") else record.rounds).add(rnd)
        if isinstance(signed.get("epsilon"), int | float):
            record.epsilon = signed["epsilon"]  # cumulative: the latest attestation wins
        if isinstance(signed.get("delta"), int | float):
            record.delta = signed["delta"]
        if not signed.get("refused") and isinstance(signed.get("steps"), int):
            record.steps += signed["steps"]

    def card(self) -> dict[str, Any]:
        started = self.started.payload
        finished = self.finished.payload if self.finished else {}
        all_rounds = set(self.dropouts) | set(self.aggregated)
        for site in self.sites.values():
            all_rounds |= site.rounds | site.refused
        rounds = [
            {
                "round": rnd,
                "sites": sorted(s for s, r in self.sites.items() if rnd in r.rounds),
                "refused": sorted(s for s, r in self.sites.items() if rnd in r.refused),
                "dropouts": sorted(self.dropouts.get(rnd, ())),
                "aggregated_sites": self.aggregated.get(rnd),
            }
            for rnd in sorted(all_rounds)
        ]
        sites = {
            name: {
                "rounds": sorted(r.rounds),
                "refused_rounds": sorted(r.refused),
                "final_epsilon": r.epsilon,
                "delta": r.delta,
                "total_steps": r.steps,
            }
            for name, r in sorted(self.sites.items())
        }
        return {
            **{key: started.get(key) for key in RUN_FIELDS},
            "started_at": self.started.time,
            "started_seq": self.started.seq,
            "resumed": self.resumed,
            "finished_at": self.finished.time if self.finished else None,
            "rounds_completed": finished.get("rounds_completed"),
            "final_model_sha256": finished.get("final_model_sha256"),
            "rounds": rounds,
            "sites": sites,
            "errors": self.errors,
        }


def provenance_card(ledger: Ledger, *, run_id: str | None = None) -> dict[str, Any]:
    """Summarise one run: what ran, why, which sites trained when, at what privacy cost.

    Reads entries only (no other source can disagree with the audited record). Entries after
    a run_started/run_resumed belong to that run. With several runs in one ledger pass
    ``run_id``; an ambiguous or unknown run raises ValueError listing the run ids.
    """
    runs: dict[str, _Run] = {}
    current: _Run | None = None
    count, heads, last = 0, 0, None
    for entry in ledger.entries():
        count, last = count + 1, entry
        if entry.kind == RUN_STARTED:
            current = runs[str(entry.payload.get("run_id"))] = _Run(entry)
        elif entry.kind == RUN_RESUMED:
            current = runs.get(str(entry.payload.get("run_id")), current)
        if entry.kind == HEAD_SIGNED:
            heads += 1
        elif current is not None and entry.kind != RUN_STARTED:
            current.add(entry)
    if not runs:
        raise LedgerError("ledger has no run_started entry: nothing to describe")
    if run_id is None and len(runs) > 1:
        raise ValueError(f"ledger holds several runs; pass run_id, one of: {', '.join(runs)}")
    if run_id is not None and run_id not in runs:
        raise ValueError(f"unknown run_id {run_id!r}; runs in ledger: {', '.join(runs)}")
    card = (runs[run_id] if run_id is not None else next(iter(runs.values()))).card()
    card["ledger"] = {
        "entries": count,
        "head_seq": last.seq if last else 0,
        "head_hash": last.hash if last else None,
        "signed_heads": heads,
    }
    return card
