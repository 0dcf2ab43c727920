"""The run recorder, observed: each event it records also reaches the run's monitor.

A subclass rather than an edit of `RunRecorder`: the recorder keeps writing the run folder
exactly as before, and with monitoring off the coordinator uses the plain recorder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig
from fedsafe.server.compliance import Compliance
from fedsafe.server.monitor.monitor import Monitor
from fedsafe.server.monitor.state import RunState
from fedsafe.server.recorder import RunRecorder

__all__ = ["ObservedRecorder", "recorder_for"]

log = logging.getLogger("fedsafe.server")


class ObservedRecorder(RunRecorder):
    """A `RunRecorder` that tells `monitor` what it recorded, after recording it."""

    def __init__(
        self,
        run_dir: Path,
        cfg: ExperimentConfig,
        monitor: Monitor,
        roster: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__(run_dir, cfg)
        self.monitor = monitor
        # The coordinator's roster (node -> verified site name): a site that refuses before it
        # ever trained is known to the recorder only as node-<id>, to the roster by its name.
        self.roster: Mapping[int, str] = roster if roster is not None else {}

    def round_started(self, server_round: int) -> None:
        super().round_started(server_round)
        self.monitor.round_started(server_round)

    def site_trained(
        self, server_round: int, node_id: int, content: RecordDict, update_norm: float | None = None
    ) -> None:
        super().site_trained(server_round, node_id, content, update_norm)
        name = self._name(node_id)
        epsilon = self.sites[name].train.get(keys.EPSILON)
        finite = epsilon if epsilon is not None and math.isfinite(epsilon) else None
        self.monitor.site_trained(server_round, name, finite)

    def site_failed(self, server_round: int, node_id: int, code: int, reason: str) -> None:
        super().site_failed(server_round, node_id, code, reason)
        name = self.roster.get(node_id) or self._round["refused"][-1]  # else the recorder's
        self.monitor.site_failed(server_round, name, code, reason)

    def site_excluded(self, server_round: int, site: str, reason: str) -> None:
        super().site_excluded(server_round, site, reason)
        self.monitor.site_excluded(server_round, site)

    def round_finished(self, server_round: int) -> None:
        super().round_finished(server_round)
        self.monitor.round_finished(server_round, float(self.rounds[-1]["seconds"]))


def recorder_for(
    cfg: ExperimentConfig, run_dir: Path, compliance: Compliance
) -> tuple[RunRecorder, Monitor | None]:
    """The run's recorder: observed by a started monitor when `cfg.monitoring` is on."""
    if not cfg.monitoring.enabled:
        return RunRecorder(run_dir, cfg), None
    state = RunState(
        compliance.run_id,
        rounds_planned=cfg.training.rounds,
        round_timeout_s=cfg.strategy.round_timeout_s,
    )
    caps: dict[str, Any] = {}

    def cap_for(site: str) -> float | None:
        if not cfg.privacy.enabled:
            return None
        return caps.setdefault(site, cfg.federation.cap_for(site))

    monitor = Monitor(
        cfg.monitoring,
        state,
        run_dir=run_dir,
        ledger=compliance.ledger,
        server_public_pem=compliance.coordinator.public,
        witness=compliance.witness,
        cap_for=cap_for,
    ).start()
    log.info("monitoring: run state in %s/monitor.json and on %s", run_dir, monitor.url)
    return ObservedRecorder(run_dir, cfg, monitor, compliance.roster), monitor
