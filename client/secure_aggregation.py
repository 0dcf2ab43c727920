"""A site's side of secure aggregation: Flower's SecAgg+ mod, hardened, around the DP round.

The site app is one ClientApp for every mode; in a secure-aggregation run its training
handler is ``secure_train`` and ``secure_aggregation_mod`` sits in front of it:

- before anything is reserved or charged, the site checks what needs no training: the server
  declared the ChaCha20 mask generator, the site's weight fits the announced max_weight, and
  the global model it was sent fits the quantisation range;
- after training, an update that would be clipped or wrap around is refused, never sent
  clipped (that refusal is charged: it depends on the trained, noised model);
- the site's plain update never leaves: Flower's mod replaces it by a masked vector, and the
  site signs its attestation over the digest of exactly those masked bytes;
- before the unmask stage it refuses alive/dropped sets that would strip a live site's mask.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Error, Message
from flwr.app.message_type import MessageType
from flwr.client.mod.secure_aggregation.secaggplus_mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.compat.common import recorddict_compat as compat

from fedsafe.client.local_round import RoundOutcome, released_weight, train_round
from fedsafe.client.round_request import RoundContext, refusal
from fedsafe.client.secagg_checks import check_stage, state_of
from fedsafe.client.site import REFUSAL_CODE, SiteRuntime
from fedsafe.common import keys
from fedsafe.common.attestation import sign_statement
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.data import dataset_info
from fedsafe.common.errors import FedsafeError
from fedsafe.common.models import model_for
from fedsafe.common.privacy.client_level import client_level_account
from fedsafe.common.privacy.distributed_dp import MECHANISM, encode_update
from fedsafe.common.secagg import (
    MASKING_NAME,
    hardened_prg,
    masked_digest,
)

__all__ = [
    "SECAGG_REFUSAL_CODE",
    "UpdateOutOfRangeError",
    "audit_dir",
    "is_secure_stage",
    "secure_aggregation_mod",
    "secure_train",
]

log = logging.getLogger("fedsafe.client")

SECAGG_REFUSAL_CODE = 4110  # a site refused a secure-aggregation step (unmask, range, PRG)

Signer = Callable[[Context, str], bytes]  # (context, run id) -> the site's signing key (PEM)


class UpdateOutOfRangeError(FedsafeError):
    """The weighted update does not fit the quantisation range the server announced."""


class _Refused(FedsafeError):
    """The site's training handler answered with an error: the step ends with that error."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def is_secure_stage(msg: Message) -> bool:
    """True for a SecAgg+ training message (it carries the protocol's stage record)."""
    return msg.metadata.message_type == MessageType.TRAIN and (
        RECORD_KEY_CONFIGS in msg.content.config_records
    )


def _stage(msg: Message) -> str | None:
    if not is_secure_stage(msg) or msg.has_error():
        return None
    stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE)
    return stage if isinstance(stage, str) else None


_state = state_of


def _peak(arrays: list[np.ndarray]) -> float:
    return max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)


def _guard_range(call_next: ClientAppCallable) -> ClientAppCallable:
    """Refuse, rather than let Flower silently clip, an update that does not fit the range."""

    def guarded(msg: Message, ctxt: Context) -> Message:
        reply = call_next(msg, ctxt)
        if reply.has_error():
            raise _Refused(reply.error.code, reply.error.reason or "")
        state = _state(ctxt)
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        ratio = fitres.num_examples / state.max_weight
        if ratio > 1:
            raise UpdateOutOfRangeError(
                f"secure aggregation: {fitres.num_examples} examples exceed "
                f"max_weight={state.max_weight:g}; the weighted sum would overflow"
            )
        peak = _peak(parameters_to_ndarrays(fitres.parameters))
        if peak * ratio > state.clipping_range:
            raise UpdateOutOfRangeError(
                f"secure aggregation: a weighted parameter reaches {peak * ratio:.4g}, beyond "
                f"the clipping range {state.clipping_range:g}; it would be clipped silently. "
                "Raise security.secagg_clipping_range"
            )
        return reply

    return guarded


def _sign_masked(reply: Message, ctxt: Context, signer: Signer) -> Message:
    """Sign the round's statement over the masked bytes; the plain update must be gone."""
    content = reply.content
    if any(len(record) for record in content.array_records.values()):
        raise FedsafeError("secure aggregation: the plain update is still in the reply")
    vector = content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
    draft = json.loads(str(content.config_records[keys.ATTESTATION]["payload"]))
    draft["update_digest"] = masked_digest(cast(list[bytes], vector))
    draft["masking"] = MASKING_NAME
    signed = sign_statement(draft, signer(ctxt, str(draft["run_id"])))
    content.config_records[keys.ATTESTATION] = ConfigRecord(signed)
    return reply


def secure_aggregation_mod(
    signer: Signer, enabled: Callable[[Context], bool] = lambda ctxt: True
) -> Callable[[Message, Context, ClientAppCallable], Message]:
    """Flower's ``secaggplus_mod`` with fedsafe's checks (``secagg_checks.py``) and ChaCha20.

    A refused step leaves the SecAgg+ state unchanged and answers with an error reply (a
    site's own refusal names the site). Messages of other kinds, and every message of a run
    that is not under secure aggregation (``enabled``), pass straight to the app.
    """

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        stage = _stage(msg)
        if stage is None or not enabled(ctxt):
            return call_next(msg, ctxt)
        flwr_log = logging.getLogger("flwr")  # its per-stage DEBUG lines would flood the log
        if flwr_log.getEffectiveLevel() < logging.INFO:
            flwr_log.setLevel(logging.INFO)
        try:
            check_stage(stage, msg, ctxt)
            inner = _guard_range(call_next) if stage == Stage.COLLECT_MASKED_VECTORS else call_next
            with hardened_prg():
                reply = secaggplus_mod(msg, ctxt, inner)
            if stage == Stage.COLLECT_MASKED_VECTORS and not reply.has_error():
                reply = _sign_masked(reply, ctxt, signer)
            return reply
        except FedsafeError as err:
            reason = str(err)
            log.warning("secure aggregation step %s refused: %s", stage, reason)
            if isinstance(err, _Refused):
                code = err.code
            else:
                code = REFUSAL_CODE if reason.startswith("site ") else SECAGG_REFUSAL_CODE
            return Message(Error(code=code, reason=reason), reply_to=msg)

    return mod


def audit_dir(site: SiteRuntime) -> Path:
    """Where a site keeps, for itself, what it contributed under secure aggregation."""
    return site.budget_store.parent / "secagg"


def _keep(
    site: SiteRuntime, ctx: RoundContext, outcome: RoundOutcome, received: dict[str, torch.Tensor]
) -> None:
    """Site-local: the statement over the plain update, the update and the model received."""
    folder = audit_dir(site)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{ctx.run_id}-round-{ctx.server_round}"
    record = {
        "attestation": {
            **outcome.attestation,
            "signature": outcome.attestation["signature"].hex(),
        },
        "num_examples": int(outcome.metrics[keys.NUM_EXAMPLES]),
    }
    (folder / f"{stem}.json").write_text(json.dumps(record, sort_keys=True) + "\n", "utf-8")
    for suffix, state in (("", outcome.state), ("-received", received)):
        named: dict[str, Any] = {k: v.numpy() for k, v in state.items()}
        np.savez(folder / f"{stem}{suffix}.npz", **named)


def _claim_round(site: SiteRuntime, ctx: RoundContext) -> None:
    """Record, before training, that this site answers this round's collect stage; a second
    request for the same round is refused, DP or not (two sums over different sites would
    reveal the difference between them)."""
    folder = audit_dir(site)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{ctx.run_id}-round-{ctx.server_round}.contributed"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise refusal(
            site,
            ctx,
            "it already sent its masked input for this round; under secure aggregation it "
            "never contributes to a round twice (two sums over different sites would reveal "
            "the difference)",
        ) from None


def _received(cfg: ExperimentConfig, arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    names = list(model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset)).state_dict())
    if len(arrays) != len(names):
        raise ValueError(
            f"expected {len(names)} arrays for model {cfg.model.name}, got {len(arrays)}"
        )
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in zip(names, arrays, strict=True)}


def secure_train(
    cfg: ExperimentConfig,
    site: SiteRuntime,
    ctx: RoundContext,
    msg: Message,
    ctxt: Context,
    *,
    keep_update_arrays: bool = False,
) -> Message:
    """One DP round whose update leaves only as a SecAgg+ input (the mod masks and signs it)."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    arrays = parameters_to_ndarrays(fitins.parameters)
    received = _received(cfg, arrays)
    state = _state(ctxt)
    account = client_level_account(cfg)
    distributed = account is not None and account.mode == "distributed"
    cap = int(state.max_weight)
    if cap < 1:
        raise UpdateOutOfRangeError(
            f"site {site.name}: the round's max_weight {state.max_weight:g} is below 1; "
            "refused before training (nothing charged)"
        )
    # The coordinator's share cap is announced as max_weight: the site weighs at most that.
    weight = 1 if distributed else min(released_weight(site, site.data.n_train), cap)
    if not distributed and _peak(arrays) * weight / state.max_weight > state.clipping_range:
        raise UpdateOutOfRangeError(
            f"site {site.name}: the global model it was sent does not fit the clipping range "
            f"{state.clipping_range:g}; refused before training (nothing charged)"
        )
    _claim_round(site, ctx)
    outcome = train_round(cfg, site, received, ctx)
    if keep_update_arrays:
        _keep(site, ctx, outcome, received)
    draft = json.loads(str(outcome.attestation["payload"]))
    metrics = dict(outcome.metrics)
    metrics[keys.NUM_EXAMPLES], draft["num_examples"] = float(weight), weight
    if distributed:
        assert account is not None
        update = [
            outcome.state[k].numpy().astype(np.float64) - received[k].numpy().astype(np.float64)
            for k in received
        ]
        values, added = encode_update(
            update,
            noise_multiplier=account.noise_multiplier,
            clipping_norm=account.clipping_norm,
            clipping_range=state.clipping_range,
            target_range=state.target_range,
            threshold=state.threshold,
        )
        draft["client_level"] = {
            "mechanism": MECHANISM,
            "noise_multiplier": account.noise_multiplier,
            "clipping_norm": account.clipping_norm,
            "threshold": state.threshold,
            "share_variance": added["share_variance"],
        }
    else:
        # float64: Flower quantises in the input's dtype, and float32 near the clipping range
        # has a coarser grid (2**-20 at 8) than the quantisation step itself.
        values = [v.numpy().astype(np.float64) for v in outcome.state.values()]
    fitres = FitRes(
        status=Status(Code.OK, ""),
        parameters=ndarrays_to_parameters(values),
        num_examples=int(metrics[keys.NUM_EXAMPLES]),
        metrics=dict(metrics),
    )
    content = compat.fitres_to_recorddict(fitres, keep_input=True)
    content[keys.SITE] = ConfigRecord({keys.SITE_NAME: site.name})
    # The draft names the plain update's digest; the mod replaces it by the masked one and
    # signs. Only the masked statement ever leaves the site.
    content[keys.ATTESTATION] = ConfigRecord({"payload": json.dumps(draft)})
    return Message(content=content, reply_to=msg)
