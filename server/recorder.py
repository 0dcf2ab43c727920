"""The run folder: per-round, per-site metrics as they arrive, and the summary at the end."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig, to_dict
from fedsafe.common.metrics import fairness_gap
from fedsafe.server.bounds import cap_weights
from fedsafe.server.progress import RoundProgress
from fedsafe.server.validation import scalar_metrics

__all__ = ["RunRecorder", "clean_json"]

log = logging.getLogger("fedsafe.server")


def clean_json(value: Any) -> Any:
    """NaN and infinities become null: strict JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def _weighted(rows: list[dict[str, float]], key: str) -> float:
    """Example-weighted mean of `key` over the sites that sent it; unweighted if a site that
    sent it withheld its example count (a site release policy may)."""
    pairs = [
        (r.get(keys.NUM_EXAMPLES, math.nan), r[key])
        for r in rows
        if math.isfinite(r.get(key, math.nan))
    ]
    if not pairs:
        return math.nan
    if not all(math.isfinite(w) and w > 0 for w, _ in pairs):
        return sum(v for _, v in pairs) / len(pairs)
    total = sum(w for w, _ in pairs)
    return sum(w * v for w, v in pairs) / total


def _signed(content: RecordDict) -> dict[str, Any]:
    """The attestation's signed payload (already verified by the compliance layer)."""
    try:
        payload = json.loads(str(content[keys.ATTESTATION]["payload"]))
    except (KeyError, TypeError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= 40 else None


@dataclass
class _Site:
    trained_rounds: list[int] = field(default_factory=list)
    train: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    # From the site's signed attestation: its release policy and where its noise came from.
    release: str | None = None
    randomness: str | None = None
    refusals: list[dict[str, Any]] = field(default_factory=list)
    exclusions: list[dict[str, Any]] = field(default_factory=list)


class RunRecorder:
    """Writes metrics.jsonl line by line (a crash keeps what was seen), summary.json at the end."""

    def __init__(self, run_dir: Path, cfg: ExperimentConfig) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.sites: dict[str, _Site] = {}
        self.node_sites: dict[int, str] = {}
        self.rounds: list[dict[str, Any]] = []
        self.stop: dict[str, Any] | None = None
        self._t0 = time.perf_counter()
        self._round_t0 = self._t0
        self._round: dict[str, Any] = {}
        self._progress: RoundProgress | None = None  # a bar on a terminal, from round 1

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps so a resumed run's summary covers every round (plain JSON)."""
        sites = {name: asdict(site) for name, site in self.sites.items()}
        return {"sites": sites, "rounds": self.rounds, "stop": self.stop}

    def restore(self, state: dict[str, Any]) -> None:
        self.sites = {name: _Site(**site) for name, site in state["sites"].items()}
        self.rounds, self.stop = state["rounds"], state["stop"]

    def _site(self, name: str) -> _Site:
        return self.sites.setdefault(name, _Site())

    def _write(self, line: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(clean_json(line), sort_keys=True) + "\n")
        self._metrics.flush()

    def _name(self, node_id: int, content: RecordDict | None = None) -> str:
        if content is not None and keys.SITE in content:
            self.node_sites[node_id] = str(content[keys.SITE][keys.SITE_NAME])
        return self.node_sites.get(node_id, f"node-{node_id}")

    def round_started(self, server_round: int) -> None:
        if self._progress is None:
            self._progress = RoundProgress(self.cfg.training.rounds, done=server_round - 1)
        self._round_t0 = time.perf_counter()
        self._round = {"round": server_round, "trained": [], "refused": []}

    def site_trained(
        self, server_round: int, node_id: int, content: RecordDict, update_norm: float | None = None
    ) -> None:
        """One accepted update; `update_norm` (its L2 distance from the global model) goes to
        metrics.jsonl only, so an operator can see how far honest updates move and tune
        strategy.max_update_norm."""
        name = self._name(node_id, content)
        metrics = scalar_metrics(content)
        site = self._site(name)
        site.trained_rounds.append(server_round)
        site.train = metrics
        site.steps += int(metrics[keys.STEPS])
        signed = _signed(content)
        site.release = _text(signed.get("release")) or site.release
        site.randomness = _text(signed.get("randomness")) or site.randomness
        self._round.setdefault("trained", []).append(name)
        line = {"round": server_round, "site": name, "phase": "train", **metrics}
        if update_norm is not None:
            line["update_norm"] = update_norm
        self._write(line)

    def site_failed(self, server_round: int, node_id: int, code: int, reason: str) -> None:
        name = self._name(node_id)
        if name.startswith("node-") and reason.startswith("site "):
            name = reason.split(":", 1)[0].removeprefix("site ")
        self._site(name).refusals.append({"round": server_round, "code": code, "reason": reason})
        self._round.setdefault("refused", []).append(name)
        self._write(
            {
                "round": server_round,
                "site": name,
                "phase": "refused",
                "code": code,
                "reason": reason,
            }
        )
        log.warning("round %d: site %s did not take part: %s", server_round, name, reason)

    def site_excluded(self, server_round: int, site: str, reason: str) -> None:
        """Not sent work this round (no valid consent, or no verified identity)."""
        self._site(site).exclusions.append({"round": server_round, "reason": reason})
        self._round.setdefault("excluded", []).append(site)
        self._write({"round": server_round, "site": site, "phase": "excluded", "reason": reason})

    def site_evaluated(self, server_round: int, node_id: int, content: RecordDict) -> None:
        name = self._name(node_id, content)
        metrics = scalar_metrics(content)
        self._site(name).evaluation = metrics
        self._write({"round": server_round, "site": name, "phase": "evaluate", **metrics})

    def stopped(self, server_round: int, reason: str) -> None:
        self.stop = {"round": server_round, "reason": reason}
        log.warning("round %d: stopping training: %s", server_round, reason)

    def global_metrics(self) -> dict[str, float]:
        """Held-out figures over the sites, each site's count clipped as in aggregation."""
        rows = [dict(s.evaluation) for s in self.sites.values() if s.evaluation]
        counts = {
            i: r[keys.NUM_EXAMPLES]
            for i, r in enumerate(rows)
            if math.isfinite(r.get(keys.NUM_EXAMPLES, math.nan))
        }
        share = self.cfg.strategy.max_weight_share
        for i, weight in cap_weights(counts, max_share=share).items():
            rows[i][keys.NUM_EXAMPLES] = weight
        return {
            k: _weighted(rows, k)
            for k in (keys.LOSS, keys.ACCURACY, keys.BALANCED_ACCURACY, keys.AUROC)
        }

    def held_out_losses(self) -> dict[str, float | None]:
        """Each site's last released held-out loss (of the model it evaluated last)."""
        return {name: s.evaluation.get(keys.LOSS) for name, s in self.sites.items()}

    def round_finished(self, server_round: int) -> None:
        figures = self.global_metrics()
        eps = [s.train.get(keys.EPSILON, math.nan) for s in self.sites.values() if s.train]
        seconds = time.perf_counter() - self._round_t0
        row = {**self._round, "round": server_round, "seconds": seconds, "global": figures}
        self.rounds.append(row)
        self._write({"round": server_round, "phase": "global", "seconds": seconds, **figures})
        finite_eps = [e for e in eps if math.isfinite(e)]
        log.info(
            "round %d/%d  trained %d, refused %d, excluded %d  held-out acc %.3f  auroc %.3f  "
            "loss %.3f  max eps %s  %.1f s",
            server_round,
            self.cfg.training.rounds,
            len(row.get("trained", [])),
            len(row.get("refused", [])),
            len(row.get("excluded", [])),
            figures[keys.ACCURACY],
            figures[keys.AUROC],
            figures[keys.LOSS],
            f"{max(finite_eps):.3f}" if finite_eps else "n/a (no DP)",
            seconds,
        )
        if self._progress is not None:
            self._progress.round_done(server_round)

    def _site_summary(self, name: str) -> dict[str, Any]:
        """One site's line of summary.json: only what the site itself reported and signed."""
        s = self.sites[name]
        dp = self.cfg.privacy.enabled
        return {
            "accuracy": s.evaluation.get(keys.ACCURACY),
            "balanced_accuracy": s.evaluation.get(keys.BALANCED_ACCURACY),
            "auroc": s.evaluation.get(keys.AUROC),
            "loss": s.evaluation.get(keys.LOSS),
            "num_test": s.evaluation.get(keys.NUM_EXAMPLES),
            "num_train": s.train.get(keys.NUM_EXAMPLES),
            "epsilon": s.train.get(keys.EPSILON) if dp else None,
            "delta": s.train.get(keys.DELTA) if dp else None,
            "steps": s.steps,
            "noise_multiplier": s.train.get(keys.NOISE_MULTIPLIER) if dp else None,
            "sample_rate": s.train.get(keys.SAMPLE_RATE),
            "rounds_trained": s.trained_rounds,
            "release_policy": s.release,
            "randomness": s.randomness,
            "private": dp and s.randomness == "os-csprng",
            "refusals": s.refusals,
            "exclusions": s.exclusions,
            "cap": self.cfg.federation.cap_for(name) if dp else None,
        }

    def close(self) -> None:
        """End the progress bar and metrics.jsonl (also when the run fails before its summary)."""
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self._metrics.close()

    def untrained_reason(self) -> str | None:
        """Why no site trained in any round, or None when one did: the sites' last refusals and
        exclusions (the first few; the rest counted), and the stop that ended the run."""
        if any(site.trained_rounds for site in self.sites.values()):
            return None
        why = [
            f"{name}: {(site.refusals or site.exclusions)[-1]['reason']}"
            for name, site in sorted(self.sites.items())
            if site.refusals or site.exclusions
        ]
        more = f"; and {len(why) - 3} more" if len(why) > 3 else ""
        parts = [f"all {len(why)} site(s) refused or excluded: " + "; ".join(why[:3]) + more]
        if not why:
            parts = ["no site answered the roll call or was sent work"]
        if self.stop:
            parts.append(f"training stopped at round {self.stop['round']}: {self.stop['reason']}")
        return "; ".join(parts)

    def finish(
        self,
        *,
        model_path: Path,
        model_sha256: str,
        compliance: Any = None,
        client_level: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write summary.json; its numbers come only from what the sites reported."""
        self.close()
        wall = time.perf_counter() - self._t0
        sites = {name: self._site_summary(name) for name in sorted(self.sites)}
        accuracies = {n: v["accuracy"] for n, v in sites.items() if v["accuracy"] is not None}
        counts = {n: int(v["num_test"]) for n, v in sites.items() if v.get("num_test")}
        fairness = None
        if accuracies:
            gap = fairness_gap(accuracies, counts)
            fairness = {"metric": "accuracy", **gap} if gap["n_sites"] else None
        round_seconds = [r["seconds"] for r in self.rounds]
        summary = {
            "run": self.cfg.name,
            "run_dir": str(self.run_dir),
            "dataset": self.cfg.dataset.name,
            "strategy": self.cfg.strategy.name,
            "privacy": {
                "enabled": self.cfg.privacy.enabled,
                "target_epsilon": self.cfg.privacy.target_epsilon,
                "noise_multiplier": self.cfg.privacy.noise_multiplier,
                "delta": self.cfg.privacy.delta,
                "max_grad_norm": self.cfg.privacy.max_grad_norm,
                "accountant": self.cfg.privacy.accountant,
            },
            "secure_aggregation": self.cfg.security.secure_aggregation,
            "sealed_updates": self.cfg.security.sealed_updates
            and not self.cfg.security.secure_aggregation,
            "client_level": client_level,
            "rounds_planned": self.cfg.training.rounds,
            "rounds_completed": len(self.rounds),
            "stopped_early": self.stop,
            "sites": sites,
            "global": self.global_metrics(),
            "fairness": fairness,
            "model": {"path": model_path.name, "sha256": model_sha256},
            "wall_time_s": wall,
            "seconds_per_round": sum(round_seconds) / len(round_seconds) if round_seconds else None,
            "config": to_dict(self.cfg),
        }
        if compliance is not None:
            head = compliance.ledger.head()
            summary["purpose"] = compliance.purpose
            summary["consent"] = compliance.decisions
            summary["attestations"] = compliance.attestations
            summary["ledger"] = {
                "path": "ledger.sqlite",
                "witness": compliance.witness.name,
                "entries": head.seq if head else 0,
                "head_hash": head.hash if head else None,
                "server_key": "keys/server_signing.pub",
            }
        (self.run_dir / "summary.json").write_text(
            json.dumps(clean_json(summary), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return summary
