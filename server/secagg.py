"""The secure-aggregation ServerApp: Flower's SecAgg+ workflow (legacy API), hardened, recorded."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetPropertiesIns,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid, ServerApp

from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig, from_flat
from fedsafe.common.data import dataset_info
from fedsafe.common.errors import FedsafeError
from fedsafe.common.flower_env import apply_offline_flower_env
from fedsafe.common.models import model_for
from fedsafe.common.secagg import PRG_KEY, PRG_NAME, SecAggSizing, hardened_prg, secagg_sizing
from fedsafe.server.federation import MODEL_FILE, save_model
from fedsafe.server.recorder import RunRecorder
from fedsafe.server.roster import wait_for_sites
from fedsafe.server.run_dir import new_run_dir

__all__ = [
    "DEFAULT_CLIPPING_RANGE",
    "SecAggRecordingFedAvg",
    "site_sizes",
    "run_secure_federation",
    "build_secagg_server_app",
    "app",
]

log = logging.getLogger("fedsafe.server")

# Model weights (not updates) are aggregated; fedsafe's models keep |w| well below this, and a
# site refuses (never silently clips) a weighted value beyond it.
DEFAULT_CLIPPING_RANGE = 8.0
FAILED_CODE = 4400  # a site's SecAgg+ step failed without a fedsafe reason (crash, lost state)


def _as_record(name: str, metrics: dict[str, Scalar]) -> RecordDict:
    floats = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return RecordDict(
        {keys.SITE: ConfigRecord({keys.SITE_NAME: name}), keys.METRICS: MetricRecord(floats)}  # type: ignore[arg-type]
    )


def _mean_metrics(pairs: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    sums: dict[str, float] = {}
    total = sum(n for n, _ in pairs)
    for n, metrics in pairs:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                sums[k] = sums.get(k, 0.0) + n * float(v)
    return {k: v / total for k, v in sums.items()} if total else {}


def _failure(failure: BaseException | tuple[ClientProxy, Any]) -> tuple[int, str]:
    """Code and reason of a failed SecAgg+ reply (the workflow wraps Flower's Error)."""
    error = failure.args[0] if isinstance(failure, BaseException) and failure.args else failure
    code = getattr(error, "code", FAILED_CODE)
    reason = getattr(error, "reason", None) or str(error)
    return int(code), str(reason)


class SecAggRecordingFedAvg(FedAvg):
    """Flower's legacy FedAvg as the SecAgg+ workflow drives it, writing the run folder.

    The workflow hands ``aggregate_fit`` every reply with the already unmasked *sum* as their
    parameters, so FedAvg's weighted mean of identical arrays returns the secure aggregate. Per
    site only scalar metrics are recorded (what plain mode records); refusals by reason.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        recorder: RunRecorder,
        *,
        run_id: str,
        initial: Parameters,
        min_sites: int,
    ) -> None:
        def config(server_round: int) -> dict[str, Scalar]:
            return {
                keys.RUN_ID: run_id,
                keys.PURPOSE: cfg.compliance.purpose,
                keys.SERVER_ROUND: server_round,
                PRG_KEY: PRG_NAME,
            }

        super().__init__(
            fraction_fit=cfg.strategy.fraction_train,
            fraction_evaluate=1.0,
            min_fit_clients=min_sites,
            min_evaluate_clients=min_sites,
            min_available_clients=min_sites,
            on_fit_config_fn=config,
            on_evaluate_config_fn=config,
            initial_parameters=initial,
            fit_metrics_aggregation_fn=_mean_metrics,
            evaluate_metrics_aggregation_fn=_mean_metrics,
        )
        self.recorder = recorder
        self._aggregated: set[int] = set()

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self.recorder.round_started(server_round)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        seen: set[tuple[int, str]] = set()
        for failure in failures:
            code, reason = _failure(failure)
            if (code, reason) not in seen:  # the workflow lists a stage's failure more than once
                seen.add((code, reason))
                self.recorder.site_failed(server_round, -1, code, reason)
        for proxy, fitres in results:
            name = str(fitres.metrics.get(keys.SITE_NAME, f"node-{proxy.node_id}"))
            self.recorder.site_trained(
                server_round, proxy.node_id, _as_record(name, fitres.metrics)
            )
        self._aggregated.add(server_round)
        return super().aggregate_fit(server_round, results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        if server_round not in self._aggregated:
            self.recorder.stopped(
                server_round, "secure aggregation halted: too few sites left for its threshold"
            )
        return super().configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        for proxy, res in results:
            name = str(res.metrics.get(keys.SITE_NAME, f"node-{proxy.node_id}"))
            self.recorder.site_evaluated(server_round, proxy.node_id, _as_record(name, res.metrics))
        out = super().aggregate_evaluate(server_round, results, failures)
        self.recorder.round_finished(server_round)
        return out


def site_sizes(grid: Grid, node_ids: list[int], *, run_id: str, timeout_s: float) -> dict[int, int]:
    """Ask each site its training-set size (legacy get_properties): max_weight comes from these.

    Flower's SecAgg+ sends ``num_examples`` in the clear with every masked vector, so this
    reveals nothing the protocol does not; it only arrives before the protocol needs it.
    """
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({keys.RUN_ID: run_id}))
    messages = [
        Message(
            content=content,
            dst_node_id=node,
            message_type=MessageTypeLegacy.GET_PROPERTIES,
            group_id="0",
        )
        for node in node_ids
    ]
    sizes: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        if reply.has_error():
            log.warning(
                "node %d did not report its size: %s",
                reply.metadata.src_node_id,
                reply.error.reason,
            )
            continue
        properties = compat.recorddict_to_getpropertiesres(reply.content).properties
        sizes[reply.metadata.src_node_id] = int(properties[keys.NUM_EXAMPLES])
    return sizes


def run_secure_federation(
    grid: Grid, context: Context, cfg: ExperimentConfig, run_dir: Path
) -> tuple[dict[str, Any], SecAggSizing]:
    """All rounds through SecAgg+; the server sees only the sum and each site's scalar metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    info = dataset_info(cfg.dataset.name, cfg.dataset)
    model = model_for(cfg.model, info, seed=cfg.seed)
    template = model.state_dict()
    recorder = RunRecorder(run_dir, cfg)
    run_id = run_dir.name
    min_sites = max(3, cfg.strategy.min_sites)
    timeout = cfg.strategy.round_timeout_s
    nodes = wait_for_sites(grid, minimum=min_sites, timeout_s=cfg.compliance.roll_call_timeout_s)
    sizes = site_sizes(grid, nodes, run_id=run_id, timeout_s=cfg.compliance.roll_call_timeout_s)
    n_sample = max(min_sites, int(len(sizes) * cfg.strategy.fraction_train))
    counts = sorted(sizes.values(), reverse=True)
    sizing = secagg_sizing(
        counts[:n_sample] if n_sample <= len(counts) else counts,
        clipping_range=cfg.security.secagg_clipping_range,
        threshold=cfg.security.secagg_threshold,
    )
    sizing.max_weight = float(max(counts))  # any sampled site may be the largest
    log.info("run %s: secure aggregation (SecAgg+, ChaCha20 masks) %s", run_id, sizing.as_dict())
    initial = ndarrays_to_parameters([v.numpy() for v in template.values()])
    strategy = SecAggRecordingFedAvg(
        cfg, recorder, run_id=run_id, initial=initial, min_sites=min_sites
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=cfg.training.rounds), strategy=strategy
    )
    fit_workflow = SecAggPlusWorkflow(
        num_shares=sizing.num_shares,
        reconstruction_threshold=sizing.threshold,
        max_weight=sizing.max_weight,
        clipping_range=sizing.clipping_range,
        quantization_range=sizing.quantization_range,
        modulus_range=sizing.modulus_range,
        timeout=timeout,
    )
    with hardened_prg():
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    arrays = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(
            legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
    )
    final = {
        k: torch.from_numpy(np.asarray(a, dtype=v.numpy().dtype).copy())
        for (k, v), a in zip(template.items(), arrays, strict=True)
    }
    path = run_dir / MODEL_FILE
    sha = save_model(final, path)
    summary = recorder.finish(model_path=path, model_sha256=sha)
    summary.update(
        {
            "secure_aggregation": True,
            "secagg": {**sizing.as_dict(), "prg": PRG_NAME, "sizes_reported": len(sizes)},
        }
    )
    _rewrite_summary(run_dir, summary)
    return summary, sizing


def _rewrite_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    import json

    from fedsafe.server.recorder import clean_json

    (run_dir / "summary.json").write_text(
        json.dumps(clean_json(summary), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def build_secagg_server_app(
    cfg: ExperimentConfig | None = None,
    run_dir: Path | None = None,
) -> ServerApp:
    """The secure-aggregation ServerApp; ``cfg`` None reads Flower's run config (``flwr run``)."""
    apply_offline_flower_env()
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_cfg = (
            cfg if cfg is not None else from_flat(dict(context.run_config), source="run config")
        )
        if not run_cfg.security.secure_aggregation:
            raise FedsafeError(
                "the secure-aggregation ServerApp runs only with security.secure_aggregation=true"
            )
        run_secure_federation(grid, context, run_cfg, run_dir or new_run_dir(run_cfg))

    return app


# `flwr run` with `serverapp = "fedsafe.server.secagg:app"`
# (and `clientapp = "fedsafe.client.secagg:app"`).
app = build_secagg_server_app()
