"""The site's Flower ClientApp: unpack the message, run one private round, pack the reply."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.compat.common import recorddict_compat as compat

from fedsafe.client.consent_statements import grants_record, withdrawals_record
from fedsafe.client.local_round import (
    RoundContext,
    RoundOutcome,
    evaluate_round,
    released_weight,
    train_round,
)
from fedsafe.client.round_request import parse_round_context
from fedsafe.client.secure_aggregation import is_secure_stage, secure_aggregation_mod, secure_train
from fedsafe.client.site import REFUSAL_CODE, SITE_CONFIG, SiteRuntime, site_runtime
from fedsafe.common import crypto, keys
from fedsafe.common.attestation import identity_payload, sign_statement
from fedsafe.common.config import ExperimentConfig, from_flat
from fedsafe.common.errors import ConfigError, DataError, FedsafeError
from fedsafe.common.flower_env import quiet_actor_shutdown
from fedsafe.common.wire import pack_arrays, sealing_context

__all__ = ["app", "build_client_app", "REFUSAL_CODE", "SITE_CONFIG", "SLOW_START_ENV"]

log = logging.getLogger("fedsafe.client")

# Test hook: a simulated site's first answer in its process waits this many seconds, as a site
# still importing torch on a loaded machine does. Unset in every real run; deployed sites ignore it.
SLOW_START_ENV = "FEDSAFE_TEST_SLOW_START_S"
_started: set[int] = set()


class MalformedRequestError(FedsafeError):
    """The coordinator's message is not a well-formed round request; the site refuses it."""


# What a malformed request raises before any charge: missing records or keys, wrong types,
# arrays of other names or shapes than the model's.
_BAD_REQUEST = (KeyError, ValueError, TypeError, RuntimeError)


def _metric_record(metrics: Mapping[str, float]) -> MetricRecord:
    """Scalar metrics as a MetricRecord (copied: its dict parameter is invariant in the value)."""
    return MetricRecord(dict(metrics))


def _refuse(msg: Message, site: str, err: Exception) -> Message:
    log.warning("site %s refused: %s", site, err)
    if isinstance(err, DataError) or isinstance(err.__cause__, DataError):
        # A data problem names files, rows and counts: they stay in the site's own log.
        reason = f"site {site}: its data could not be used for this request (see the site's log)"
        return Message(Error(code=REFUSAL_CODE, reason=reason), reply_to=msg)
    return Message(Error(code=REFUSAL_CODE, reason=f"site {site}: {err}"), reply_to=msg)


def _reply(msg: Message, site: str, records: dict[str, object]) -> Message:
    content = RecordDict({keys.SITE: ConfigRecord({keys.SITE_NAME: site}), **records})  # type: ignore[dict-item]
    return Message(content=content, reply_to=msg)


def _update_record(
    cfg: ExperimentConfig, site: SiteRuntime, ctx: RoundContext, outcome: RoundOutcome
) -> dict[str, object]:
    """The reply's records; with sealed updates the arrays travel only as ciphertext."""
    records: dict[str, object] = {
        keys.METRICS: _metric_record(outcome.metrics),
        keys.ATTESTATION: ConfigRecord(outcome.attestation),
    }
    if not cfg.security.sealed_updates:
        records[keys.ARRAYS] = ArrayRecord(outcome.state)
        return records
    key_path = site.server_sealing_key
    if key_path is None or not key_path.exists():
        raise ConfigError(
            "security.sealed_updates",
            True,
            f"the ServerApp's sealing public key pinned at the site (missing: {key_path})",
        )
    plain = outcome.encoded  # 8-bit codes (training.update_bits), else the float arrays
    if plain is None:
        plain = pack_arrays({k: v.numpy() for k, v in outcome.state.items()})
    blob = crypto.seal(
        key_path.read_bytes(),
        plain,
        context=sealing_context(ctx.run_id, ctx.server_round, site.name),
    )
    records[keys.SEALED] = ConfigRecord({"blob": blob})
    return records


def _instructions(msg: Message) -> Mapping[str, Any]:
    """A training request's instructions: in its config record, or, for a SecAgg+ stage
    message, in the legacy fit instructions the protocol carries."""
    if is_secure_stage(msg):
        return compat.recorddict_to_fitins(msg.content, keep_input=True).config
    return msg.content.config_records[keys.CONFIG]


def _slow_start_for_tests(context: Context) -> None:
    """Delay a simulated site's first answer when a test sets SLOW_START_ENV, so the roll
    call's wait for sites that are still starting is tested on the real path."""
    delay = os.environ.get(SLOW_START_ENV)
    if not delay or SITE_CONFIG in context.node_config or context.node_id in _started:
        return
    _started.add(context.node_id)
    time.sleep(float(delay))


def _roll_call(run_cfg: ExperimentConfig, msg: Message, context: Context) -> Message:
    """Answer "who is there" with a statement signed by the site's key, bound to the run."""
    _slow_start_for_tests(context)
    instructions = msg.content[keys.CONFIG]
    run_id = str(instructions[keys.RUN_ID])
    try:
        site = site_runtime(run_cfg, context, run_id)
    except DataError as err:
        return _refuse(msg, "(unidentified)", err)
    statement = identity_payload(
        site=site.name, run_id=run_id, purpose=str(instructions[keys.PURPOSE])
    )
    if run_cfg.security.secure_aggregation:  # the server sizes SecAgg+ weights from it
        statement["num_examples"] = released_weight(site, site.data.n_train)
    records: dict[str, object] = {
        keys.IDENTITY: ConfigRecord(sign_statement(statement, site.signing_key))
    }
    if SITE_CONFIG not in context.node_config:  # a simulated site brings its consent along
        records[keys.CONSENT] = ConfigRecord(
            grants_record(run_cfg, site.name, site.signing_key, site.signing_public)
        )
    return _reply(msg, site.name, records)


def _train(
    run_cfg: ExperimentConfig, msg: Message, context: Context, *, keep_update_arrays: bool
) -> Message:
    """One private round, or a refusal naming why; never a crash on what the server sent."""
    try:
        ctx = parse_round_context(_instructions(msg), train=True)
        site = site_runtime(run_cfg, context, ctx.run_id)
    except DataError as err:
        return _refuse(msg, "(unidentified)", err)
    except _BAD_REQUEST as err:
        return _refuse(msg, "(unidentified)", MalformedRequestError(str(err)))
    if is_secure_stage(msg) != run_cfg.security.secure_aggregation:
        # Under secure aggregation the plain update never leaves; outside it, no SecAgg+.
        mode = "secure aggregation" if run_cfg.security.secure_aggregation else "sealed updates"
        why = MalformedRequestError(f"this run sends updates by {mode}; request refused")
        return _refuse(msg, site.name, why)
    try:
        if is_secure_stage(msg):
            return secure_train(
                run_cfg, site, ctx, msg, context, keep_update_arrays=keep_update_arrays
            )
        state = msg.content.array_records[keys.ARRAYS].to_torch_state_dict()
        update = _update_record(run_cfg, site, ctx, train_round(run_cfg, site, state, ctx))
    except FedsafeError as err:
        return _refuse(msg, site.name, err)
    except _BAD_REQUEST as err:  # a model of other shapes, a missing record: refused
        return _refuse(msg, site.name, MalformedRequestError(f"malformed request: {err}"))
    return _reply(msg, site.name, update)


def _evaluate(run_cfg: ExperimentConfig, msg: Message, context: Context) -> Message:
    """Metrics on the site's held-out rows, as its release policy allows them to leave."""
    try:
        ctx = parse_round_context(msg.content.config_records[keys.CONFIG], train=False)
        site = site_runtime(run_cfg, context, ctx.run_id)
    except DataError as err:
        return _refuse(msg, "(unidentified)", err)
    except _BAD_REQUEST as err:
        return _refuse(msg, "(unidentified)", MalformedRequestError(str(err)))
    try:
        state = msg.content.array_records[keys.ARRAYS].to_torch_state_dict()
        metrics = evaluate_round(run_cfg, site, state, ctx)
    except FedsafeError as err:
        return _refuse(msg, site.name, err)
    except _BAD_REQUEST as err:
        return _refuse(msg, site.name, MalformedRequestError(f"malformed request: {err}"))
    records: dict[str, object] = {keys.METRICS: _metric_record(metrics)}
    if SITE_CONFIG not in context.node_config:  # a simulated site withdrawing before next round
        withdrawal = withdrawals_record(
            run_cfg, site.name, site.signing_key, next_round=ctx.server_round + 1
        )
        if withdrawal is not None:
            records[keys.CONSENT] = ConfigRecord(withdrawal)
    return _reply(msg, site.name, records)


def build_client_app(
    cfg: ExperimentConfig | None = None, *, keep_update_arrays: bool = False
) -> ClientApp:
    """The ClientApp for every mode; `cfg` None means read it from Flower's run config (as
    `flwr run` does). `keep_update_arrays` keeps, site-local, each plain update sent under
    secure aggregation and the model received (for a site's own audit, and for tests)."""

    def config_of(context: Context) -> ExperimentConfig:
        quiet_actor_shutdown()  # runs where the site runs (a simulated site's actor, too)
        return cfg if cfg is not None else from_flat(dict(context.run_config), source="run config")

    def signing_key(context: Context, run_id: str) -> bytes:
        return site_runtime(config_of(context), context, run_id).signing_key

    def secure_run(context: Context) -> bool:
        return config_of(context).security.secure_aggregation

    app = ClientApp(mods=[secure_aggregation_mod(signing_key, secure_run)])

    @app.query()
    def roll_call(msg: Message, context: Context) -> Message:
        return _roll_call(config_of(context), msg, context)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _train(config_of(context), msg, context, keep_update_arrays=keep_update_arrays)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return _evaluate(config_of(context), msg, context)

    return app


app = build_client_app()
