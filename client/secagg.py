"""The site's secure-aggregation ClientApp: DP training behind Flower's SecAgg+ mod, hardened."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from flwr.app import Context, Error, Message
from flwr.app.message_type import MessageType
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import NDArrays, Scalar, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.compat.client.client import Client
from flwr.compat.client.numpy_client import NumPyClient
from flwr.compat.common import recorddict_compat as compat

from fedsafe.client.local_round import RoundContext, evaluate_round, train_round
from fedsafe.client.site import REFUSAL_CODE, SiteRuntime, site_runtime
from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig, from_flat
from fedsafe.common.data import dataset_info
from fedsafe.common.errors import FedsafeError
from fedsafe.common.flower_env import apply_offline_flower_env
from fedsafe.common.models import model_for
from fedsafe.common.secagg import (
    PRG_KEY,
    PRG_NAME,
    UnmaskRefusedError,
    check_unmask_request,
    hardened_prg,
)

__all__ = [
    "SECAGG_REFUSAL_CODE",
    "UpdateOutOfRangeError",
    "hardened_secaggplus_mod",
    "SecAggSiteClient",
    "build_secagg_client_app",
    "app",
    "audit_dir",
]

log = logging.getLogger("fedsafe.client")

SECAGG_REFUSAL_CODE = (
    4110  # a site refused a secure-aggregation step (unsafe unmask, bad range, wrong PRG)
)


class UpdateOutOfRangeError(FedsafeError):
    """The weighted update does not fit the quantisation range the server announced."""


def _stage(msg: Message) -> str | None:
    if msg.metadata.message_type != MessageType.TRAIN or msg.has_error():
        return None
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    stage = configs.get(Key.STAGE) if configs is not None else None
    return stage if isinstance(stage, str) else None


def _state(ctxt: Context) -> SecAggPlusState:
    record = ctxt.state.config_records.get(RECORD_KEY_STATE)
    return SecAggPlusState(**(dict(record) if record is not None else {}))


def _check_unmask(msg: Message, ctxt: Context) -> None:
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    active, dead = configs.get(Key.ACTIVE_NODE_ID_LIST), configs.get(Key.DEAD_NODE_ID_LIST)
    if not isinstance(active, list) or not isinstance(dead, list):
        raise UnmaskRefusedError(
            "secure aggregation (unmask stage): alive and dropped node lists are required"
        )
    state = _state(ctxt)
    check_unmask_request(
        node_id=msg.metadata.dst_node_id,
        neighbours=state.public_keys_dict.keys(),
        active=cast(list[int], active),
        dead=cast(list[int], dead),
    )


def _check_prg(msg: Message) -> None:
    config = compat.recorddict_to_fitins(msg.content, keep_input=True).config
    if config.get(PRG_KEY) != PRG_NAME:
        raise UnmaskRefusedError(
            f"secure aggregation: the server did not declare the {PRG_NAME} mask generator "
            f"(fit config {PRG_KEY}={config.get(PRG_KEY)!r}); its masks would not cancel ours. "
            "Run the server with fedsafe's secure-aggregation ServerApp"
        )


def _guard_range(call_next: ClientAppCallable) -> ClientAppCallable:
    """Refuse, rather than let Flower silently clip, an update that does not fit the range."""

    def guarded(msg: Message, ctxt: Context) -> Message:
        reply = call_next(msg, ctxt)
        if reply.has_error():
            return reply
        state = _state(ctxt)
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        ratio = fitres.num_examples / state.max_weight
        if ratio > 1:
            raise UpdateOutOfRangeError(
                f"secure aggregation: {fitres.num_examples} examples exceed "
                f"max_weight={state.max_weight:g}; "
                "the weighted sum would overflow. Expected max_weight >= every site's example count"
            )
        peak = max(
            (float(np.abs(a).max()) for a in parameters_to_ndarrays(fitres.parameters) if a.size),
            default=0.0,
        )
        if peak * ratio > state.clipping_range:
            raise UpdateOutOfRangeError(
                f"secure aggregation: a weighted parameter reaches {peak * ratio:.4g}, beyond "
                f"the clipping range {state.clipping_range:g}; it would be clipped silently. "
                "Raise the secure-aggregation clipping range"
            )
        return reply

    return guarded


def hardened_secaggplus_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` with fedsafe's checks in front and the ChaCha20 mask generator.

    Before the unmask stage it refuses intersecting alive/dropped sets; before masking it
    requires the server to have declared the hardened generator and refuses an update that
    would be clipped or overflow; a site's own refusal (budget, policy) becomes an error reply
    that names the site. A refused step leaves the SecAgg+ state unchanged.
    """
    stage = _stage(msg)
    try:
        if stage == Stage.UNMASK:
            _check_unmask(msg, ctxt)
        elif stage == Stage.COLLECT_MASKED_VECTORS:
            _check_prg(msg)
        inner = _guard_range(call_next) if stage == Stage.COLLECT_MASKED_VECTORS else call_next
        with hardened_prg():
            return secaggplus_mod(msg, ctxt, inner)
    except FedsafeError as err:
        reason = str(err)
        log.warning("secure aggregation step %s refused: %s", stage, reason)
        code = REFUSAL_CODE if reason.startswith("site ") else SECAGG_REFUSAL_CODE
        return Message(Error(code=code, reason=reason), reply_to=msg)


class _SiteRefusedError(FedsafeError):
    """A site's own refusal, prefixed with its name so the server records who refused."""


def audit_dir(site: SiteRuntime) -> Path:
    """Where a site keeps its signed statements of what it contributed under secure aggregation."""
    return site.budget_store.parent / "secagg"


def _keep(
    site: SiteRuntime,
    run_id: str,
    server_round: int,
    record: dict[str, Any],
    arrays: dict[str, dict[str, torch.Tensor]],
) -> None:
    folder = audit_dir(site)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{run_id}-round-{server_round}"
    (folder / f"{stem}.json").write_text(
        json.dumps(record, sort_keys=True) + "\n", encoding="utf-8"
    )
    for suffix, state in arrays.items():
        named: dict[str, Any] = {k: v.numpy() for k, v in state.items()}
        np.savez(folder / f"{stem}{suffix}.npz", **named)


class SecAggSiteClient(NumPyClient):
    """One site behind the legacy client API that Flower's SecAgg+ mod requires.

    ``fit`` runs fedsafe's DP round (the site's budget store is charged as always). The signed
    attestation covers the UNMASKED update's digest and stays at the site (``audit_dir``): the
    server only ever sees a masked vector, so it has nothing to check a digest against.
    """

    def __init__(
        self, cfg: ExperimentConfig, context: Context, *, keep_update_arrays: bool = False
    ) -> None:
        self.cfg = cfg
        self.context = context
        self.keep_update_arrays = keep_update_arrays
        self._names = list(
            model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset)).state_dict()
        )

    def _site(self, run_id: str) -> SiteRuntime:
        return site_runtime(self.cfg, self.context, run_id)

    def _state(self, parameters: NDArrays) -> dict[str, torch.Tensor]:
        if len(parameters) != len(self._names):
            raise FedsafeError(
                f"expected {len(self._names)} arrays for model {self.cfg.model.name}, "
                f"got {len(parameters)}"
            )
        return {
            k: torch.from_numpy(np.array(v, copy=True))
            for k, v in zip(self._names, parameters, strict=True)
        }

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        """Name and training-set size: the server sizes max_weight from the real counts."""
        site = self._site(str(config.get(keys.RUN_ID, "secagg")))
        return {keys.SITE_NAME: site.name, keys.NUM_EXAMPLES: int(site.data.n_train)}

    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        ctx = RoundContext(
            run_id=str(config[keys.RUN_ID]),
            server_round=int(config[keys.SERVER_ROUND]),
            purpose=str(config[keys.PURPOSE]),
        )
        site = self._site(ctx.run_id)
        received = self._state(parameters)
        try:
            outcome = train_round(self.cfg, site, received, ctx)
        except FedsafeError as err:
            raise _SiteRefusedError(f"site {site.name}: {err}") from err
        num_examples = int(outcome.metrics[keys.NUM_EXAMPLES])
        record = {
            "attestation": {
                **outcome.attestation,
                "signature": outcome.attestation["signature"].hex(),
            },
            "num_examples": num_examples,
        }
        kept = {"": outcome.state, "-received": received} if self.keep_update_arrays else {}
        _keep(site, ctx.run_id, ctx.server_round, record, kept)
        metrics: dict[str, Scalar] = {**outcome.metrics, keys.SITE_NAME: site.name}
        # float64: Flower quantises in the input's dtype, and float32 near the clipping range
        # has a coarser grid (2**-20 at 8) than the quantisation step itself.
        return [v.numpy().astype(np.float64) for v in outcome.state.values()], num_examples, metrics

    def evaluate(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        ctx = RoundContext(
            run_id=str(config[keys.RUN_ID]),
            server_round=int(config.get(keys.SERVER_ROUND, 0)),
            purpose=str(config.get(keys.PURPOSE, "")),
        )
        site = self._site(ctx.run_id)
        try:
            metrics = evaluate_round(self.cfg, site, self._state(parameters), ctx)
        except FedsafeError as err:
            raise _SiteRefusedError(f"site {site.name}: {err}") from err
        out: dict[str, Scalar] = {**metrics, keys.SITE_NAME: site.name}
        # What the release policy withheld is absent; the legacy API needs a loss and a count.
        return float(metrics.get(keys.LOSS, 0.0)), int(metrics.get(keys.NUM_EXAMPLES, 1)), out


def build_secagg_client_app(
    cfg: ExperimentConfig | None = None, *, keep_update_arrays: bool = False
) -> ClientApp:
    """The secure-aggregation ClientApp; ``cfg`` None reads Flower's run config (``flwr run``).

    ``keep_update_arrays`` also keeps, site-local, the global model received and the unmasked
    update sent next to the site's signed statement, so a site (or a test) can check the
    digest and the aggregate later; off by default.
    """
    apply_offline_flower_env()

    def client_fn(context: Context) -> Client:
        run_cfg = (
            cfg if cfg is not None else from_flat(dict(context.run_config), source="run config")
        )
        return SecAggSiteClient(run_cfg, context, keep_update_arrays=keep_update_arrays).to_client()

    return ClientApp(client_fn=client_fn, mods=[hardened_secaggplus_mod])


# `flwr run` with `clientapp = "fedsafe.client.secagg:app"`
# (and `serverapp = "fedsafe.server.secagg:app"`).
app = build_secagg_client_app()
