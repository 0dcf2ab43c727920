"""The steps of one coordinator run, in order: resume, admit the sites, run the rounds, finish.

Each step is a method of `RunSteps`, which holds the run's state between them; the order
itself, and what happens on failure, is `fedsafe.server.federation.run_federation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.errors import NoSiteTrainedError
from fedsafe.common.ledger import records
from fedsafe.common.privacy.client_level import ClientLevelAccount
from fedsafe.server.central_dp import CentralDP, base_strategy
from fedsafe.server.checkpoint import (
    Checkpoint,
    restore_strategy,
    save_checkpoint,
    strategy_state,
)
from fedsafe.server.compliance import Compliance
from fedsafe.server.recorder import RunRecorder
from fedsafe.server.roster import roll_call, wait_for_sites
from fedsafe.server.run_ledger import final_model, run_resumed, run_started
from fedsafe.server.secure_aggregation import SecureAggregationGrid
from fedsafe.server.strategy import RecordingStrategy, build_strategy

__all__ = ["RunSteps", "inner_strategy"]

log = logging.getLogger("fedsafe.server")


def _start_patience(cfg: ExperimentConfig) -> float:
    """Simulated sites are processes that may still be starting: wait for them (bounded). A
    deployed site that is silent is down, and the run must not wait on it."""
    return cfg.compliance.start_patience_s if cfg.compliance.site_keys_dir is None else 0.0


def _releases_so_far(compliance: Compliance, checkpoint: Checkpoint, *, abandoned: bool) -> int:
    """Client-level releases before a resume: never fewer than the ledger shows (a release is
    in the ledger before its model leaves the coordinator), plus an abandoned round's sum,
    which may have been unmasked before the crash without reaching the ledger."""
    counted = int(checkpoint.compliance.get("client_level_releases", 0))
    for entry in compliance.ledger.entries():
        if entry.kind == records.ROUND_AGGREGATED:
            level = entry.payload.get("client_level") or {}
            counted = max(counted, int(level.get("releases") or 0))
    if abandoned:
        counted = max(counted, int(checkpoint.compliance.get("client_level_releases", 0)) + 1)
    return counted


@dataclass
class RunSteps:
    """One run's state on the coordinator, and the steps `run_federation` takes in order."""

    cfg: ExperimentConfig
    run_dir: Path
    compliance: Compliance
    recorder: RunRecorder
    inner: Strategy
    client_level: ClientLevelAccount | None
    bound: dict[str, Any] = field(default_factory=dict)
    done: int = 0
    last_round: int = 0

    def resume(self, checkpoint: Checkpoint, initial: ArrayRecord) -> ArrayRecord:
        """Restore a verified checkpoint; returns the model to continue from.

        Under secure aggregation the interrupted round is abandoned, never re-run: a site
        contributes to a round's sum once (two sums over different sites would reveal the
        difference), so the run continues with the next round number.
        """
        skip = 1 if self.cfg.security.secure_aggregation else 0
        self.done = checkpoint.round + skip
        restore_strategy(base_strategy(self.inner), checkpoint.strategy)
        self.recorder.restore(checkpoint.recorder)
        self.compliance.decisions = checkpoint.compliance.get("decisions", [])
        self.compliance.attestations = checkpoint.compliance.get("attestations", [])
        if self.client_level is not None:
            self.client_level.releases = _releases_so_far(
                self.compliance, checkpoint, abandoned=skip > 0
            )
        return ArrayRecord({k: Array(v) for k, v in checkpoint.arrays.items()})

    def save(self, server_round: int, arrays: ArrayRecord, *, finished: bool = False) -> None:
        """A signed checkpoint after each round (and a final one no resume may start from)."""
        head = self.compliance.ledger.head()
        assert head is not None
        self.last_round = server_round
        save_checkpoint(
            self.run_dir,
            Checkpoint(
                round=server_round,
                arrays={k: v.numpy() for k, v in arrays.items()},
                strategy=strategy_state(base_strategy(self.inner)),
                ledger_head=(head.seq, head.hash),
                recorder=self.recorder.state(),
                compliance={
                    "decisions": self.compliance.decisions,
                    "attestations": self.compliance.attestations,
                    "client_level_releases": (
                        self.client_level.releases if self.client_level else 0
                    ),
                },
                config=self.bound,
                finished=finished,
            ),
            private_pem=self.compliance.coordinator.private,
            public_pem=self.compliance.coordinator.public,
        )

    def admit(self, grid: Grid, checkpoint: Checkpoint | None) -> None:
        """Wait for enough sites, ask each for its signed identity, and open the ledger's run."""
        cfg = self.cfg
        nodes = wait_for_sites(
            grid, minimum=cfg.strategy.min_sites, timeout_s=cfg.compliance.roll_call_timeout_s
        )
        if cfg.strategy.fraction_train >= 1.0:  # everyone trains: know everyone before round 1
            roll_call(
                grid,
                self.compliance,
                nodes,
                timeout_s=cfg.compliance.roll_call_timeout_s,
                patience_s=_start_patience(cfg),
            )
        # With sampling, each round's sampled newcomers are asked instead (RecordingStrategy).
        if checkpoint is None:
            run_started(cfg, self.compliance)
        else:
            run_resumed(self.compliance, checkpoint, self.bound, skip=self.done - checkpoint.round)

    def strategy(self, grid: Grid) -> tuple[RecordingStrategy, Grid]:
        """The recording strategy, and the grid it talks through (secure aggregation's own)."""
        cfg = self.cfg
        secure = (
            SecureAggregationGrid(
                grid,
                self.compliance,
                cfg.security,
                timeout_s=cfg.strategy.round_timeout_s,
                client_level=self.client_level,
                max_weight_share=cfg.strategy.max_weight_share,
            )
            if cfg.security.secure_aggregation
            else None
        )
        strategy = RecordingStrategy(
            self.inner,
            self.recorder,
            self.compliance,
            min_sites=cfg.strategy.min_sites,
            roll_call_timeout_s=cfg.compliance.roll_call_timeout_s,
            roll_call_patience_s=_start_patience(cfg),
            sealed=cfg.security.sealed_updates and secure is None,
            rounds_done=self.done,
            on_round_end=self.save,
            limits=cfg.strategy,
            secure=secure,
            client_level=self.client_level,
            update_bits=cfg.training.update_bits,
        )
        return strategy, cast(Grid, secure) if secure is not None else grid

    def rounds(self, grid: Grid, initial: ArrayRecord) -> ArrayRecord:
        """Every remaining round; returns the final model."""
        strategy, talk_to = self.strategy(grid)
        instructions = ConfigRecord(
            {keys.RUN_ID: self.compliance.run_id, keys.PURPOSE: self.compliance.purpose}
        )
        result = strategy.start(
            grid=talk_to,
            initial_arrays=initial,
            num_rounds=self.cfg.training.rounds - self.done,
            timeout=self.cfg.strategy.round_timeout_s,
            train_config=instructions,
            evaluate_config=ConfigRecord(dict(instructions)),
        )
        return result.arrays if len(result.arrays) else initial

    def finish(self, final: ArrayRecord) -> dict[str, Any]:
        """The final model, a last checkpoint that cannot be resumed, and the run summary;
        a run in which no site trained fails instead (its ledger keeps every refusal)."""
        why = self.recorder.untrained_reason()
        if why is not None:
            self.recorder.close()
            raise NoSiteTrainedError(
                f"no site trained in run {self.compliance.run_id} ({why}); nothing was learned. "
                f"The run folder {self.run_dir} keeps the ledger, metrics.jsonl and the refusals"
            )
        path, sha = final_model(
            self.run_dir, final, self.compliance, rounds=len(self.recorder.rounds)
        )
        self.save(max(self.last_round, self.done), final, finished=True)
        return self.recorder.finish(
            model_path=path,
            model_sha256=sha,
            compliance=self.compliance,
            client_level=self.client_level.as_dict() if self.client_level else None,
        )


def inner_strategy(cfg: ExperimentConfig, client_level: ClientLevelAccount | None) -> Strategy:
    """The configured strategy; under central client-level DP, wrapped to noise its mean."""
    inner = build_strategy(cfg.strategy)
    if client_level is not None and client_level.mode == "central":
        inner = CentralDP(inner, client_level, num_sampled_clients=cfg.strategy.min_sites)
    return inner
