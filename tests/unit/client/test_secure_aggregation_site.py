"""A site under secure aggregation, in-process: unsafe unmask requests refused, ChaCha20 in
force, nothing charged before the protocol's checks, the plain update never in a reply."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.compat.common import recorddict_compat as compat

from fedsafe.client.app import REFUSAL_CODE, build_client_app
from fedsafe.client.budget import BudgetStore
from fedsafe.client.round_request import RoundContext
from fedsafe.client.secure_aggregation import (
    SECAGG_REFUSAL_CODE,
    UpdateOutOfRangeError,
    _guard_range,
    _sign_masked,
    audit_dir,
    secure_aggregation_mod,
    secure_train,
)
from fedsafe.client.site import simulated_site
from fedsafe.common import crypto, keys
from fedsafe.common.attestation import ATTESTATION, open_statement
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.data import dataset_info
from fedsafe.common.errors import FedsafeError
from fedsafe.common.models import model_for
from fedsafe.common.secagg import (
    MASKING_NAME,
    PATCH_POINTS,
    PRG_KEY,
    PRG_NAME,
    chacha_rand_gen,
    masked_digest,
)

NID = 7
client_mod = importlib.import_module(PATCH_POINTS[0][0])
SITE_KEY, SITE_PUBLIC = crypto.generate_signing_key()
hardened_secaggplus_mod = secure_aggregation_mod(lambda context, run_id: SITE_KEY)


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower's runtime names the process' run, node and task; a unit test does it by hand."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _context(**overrides: object) -> Context:
    """A node that finished the masked-vector stage with neighbours 7, 8, 9 and 10."""
    state = SecAggPlusState(current_stage=Stage.COLLECT_MASKED_VECTORS, nid=NID, threshold=3)
    state.public_keys_dict = {n: (b"pk1-%d" % n, b"pk2-%d" % n) for n in (7, 8, 9, 10)}
    state.rd_seed_share_dict = {n: b"seed-share-%d" % n for n in (7, 8, 9, 10)}
    state.sk1_share_dict = {n: b"sk1-share-%d" % n for n in (7, 8, 9, 10)}
    state.ss2_dict = {}
    for k, v in overrides.items():
        setattr(state, k, v)
    records = RecordDict({RECORD_KEY_STATE: ConfigRecord(state.to_dict())})
    return Context(
        run_id=1, node_id=NID, node_config={keys.PARTITION_ID: 3}, state=records, run_config={}
    )


def _unmask(active: list[int], dead: list[int]) -> Message:
    configs = ConfigRecord(
        {Key.STAGE: Stage.UNMASK, Key.ACTIVE_NODE_ID_LIST: active, Key.DEAD_NODE_ID_LIST: dead}
    )
    return Message(RecordDict({RECORD_KEY_CONFIGS: configs}), dst_node_id=NID, message_type="train")


def _never(msg: Message, ctxt: Context) -> Message:
    raise AssertionError("the mod must not call the app here")


def test_an_unmask_request_with_intersecting_sets_is_refused_naming_the_nodes() -> None:
    context = _context()
    before = dict(context.state.config_records[RECORD_KEY_STATE])

    reply = hardened_secaggplus_mod(_unmask([7, 8, 9], [9, 10]), context, _never)

    assert reply.has_error() and reply.error.code == SECAGG_REFUSAL_CODE
    assert "node(s) [9] are listed both alive and dropped" in reply.error.reason
    assert (
        dict(context.state.config_records[RECORD_KEY_STATE]) == before
    )  # the protocol did not advance


def test_an_honest_unmask_request_reaches_flowers_mod() -> None:
    reply = hardened_secaggplus_mod(_unmask([7, 8, 9], [10]), _context(), _never)

    assert not reply.has_error()
    configs = reply.content.config_records[RECORD_KEY_CONFIGS]
    assert list(configs[Key.NODE_ID_LIST]) == [7, 8, 9, 10]
    assert list(configs[Key.SHARE_LIST]) == [
        b"seed-share-7",
        b"seed-share-8",
        b"seed-share-9",
        b"sk1-share-10",
    ]


def test_the_mod_runs_flower_with_the_chacha20_generator_and_restores_it() -> None:
    seen = []

    def app(msg: Message, ctxt: Context) -> Message:
        seen.append(client_mod.pseudo_rand_gen)
        raise FedsafeError("site x: stops here")

    # A node alone with itself: no neighbour's key share to check, so the app is reached.
    context = _context(
        current_stage=Stage.SHARE_KEYS, threshold=1, public_keys_dict={NID: (b"a", b"b")}
    )
    reply = hardened_secaggplus_mod(_collect({PRG_KEY: PRG_NAME}), context, app)

    assert seen == [chacha_rand_gen]
    assert reply.has_error() and reply.error.code == REFUSAL_CODE  # the site's own refusal
    assert client_mod.pseudo_rand_gen is pseudo_rand_gen


def test_messages_of_other_kinds_pass_straight_through() -> None:
    query = Message(RecordDict(), dst_node_id=NID, message_type="query")
    answer = Message(RecordDict(), reply_to=query)
    assert hardened_secaggplus_mod(query, _context(), lambda m, c: answer) is answer


def _collect(config: dict[str, str]) -> Message:
    fitins = FitIns(ndarrays_to_parameters([np.zeros(2)]), config)  # type: ignore[arg-type]
    content = compat.fitins_to_recorddict(fitins, keep_input=True)
    content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(
        {Key.STAGE: Stage.COLLECT_MASKED_VECTORS, Key.CIPHERTEXT_LIST: [], Key.SOURCE_LIST: []}
    )
    return Message(content, dst_node_id=NID, message_type="train")


def test_masking_is_refused_unless_the_server_declares_the_hardened_generator() -> None:
    context = _context(current_stage=Stage.SHARE_KEYS)

    reply = hardened_secaggplus_mod(_collect({}), context, _never)

    assert reply.has_error() and reply.error.code == SECAGG_REFUSAL_CODE
    assert PRG_NAME in reply.error.reason and "would not cancel" in reply.error.reason


def _fit_reply(msg: Message, value: float, num_examples: int) -> Message:
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.full(3, value)]), num_examples, {})
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


@pytest.mark.parametrize(
    ("value", "num_examples", "match"),
    [(3.0, 50, "beyond the clipping range"), (0.1, 200, "exceed max_weight")],
)
def test_an_update_that_would_be_clipped_or_overflow_is_refused(
    value: float, num_examples: int, match: str
) -> None:
    context = _context(max_weight=100.0, clipping_range=1.0)
    guarded = _guard_range(lambda msg, ctxt: _fit_reply(msg, value, num_examples))
    with pytest.raises(UpdateOutOfRangeError, match=match):
        guarded(_collect({PRG_KEY: PRG_NAME}), context)


def test_an_update_in_range_passes_the_guard() -> None:
    context = _context(max_weight=100.0, clipping_range=1.0)
    guarded = _guard_range(lambda msg, ctxt: _fit_reply(msg, 1.5, 50))  # weighted: 0.75
    assert not guarded(_collect({PRG_KEY: PRG_NAME}), context).has_error()


def _secure_cfg(tmp_path: Path) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "training": {"rounds": 2},
            "strategy": {"min_sites": 3},
            "security": {"secure_aggregation": True},
        },
    )


def _global_collect(cfg: ExperimentConfig, run_id: str = "run-1") -> Message:
    model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset), seed=0)
    config = {
        keys.RUN_ID: run_id,
        keys.SERVER_ROUND: 1,
        keys.PURPOSE: cfg.compliance.purpose,
        PRG_KEY: PRG_NAME,
    }
    fitins = FitIns(
        ndarrays_to_parameters([v.numpy() for v in model.state_dict().values()]), config
    )  # type: ignore[arg-type]
    content = compat.fitins_to_recorddict(fitins, keep_input=True)
    content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(
        {Key.STAGE: Stage.COLLECT_MASKED_VECTORS, Key.CIPHERTEXT_LIST: [], Key.SOURCE_LIST: []}
    )
    return Message(content, dst_node_id=NID, message_type="train")


def _charges(cfg: ExperimentConfig, run_id: str = "run-1") -> int:
    site = simulated_site(cfg, 3, run_id)
    if not site.budget_store.exists():
        return 0
    with BudgetStore.open(site.budget_store) as store:
        return len(store.charges(site.dataset_id))


def test_secure_train_charges_the_site_and_hands_the_mod_an_unsigned_draft(
    tmp_path: Path,
) -> None:
    cfg = _secure_cfg(tmp_path)
    site = simulated_site(cfg, 3, "run-1")
    msg, context = _global_collect(cfg), _context(max_weight=10_000.0, clipping_range=8.0)
    ctx = RoundContext(run_id="run-1", server_round=1, purpose=cfg.compliance.purpose)

    reply = secure_train(cfg, site, ctx, msg, context, keep_update_arrays=True)

    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    assert fitres.num_examples == site.data.n_train
    assert (
        math.isfinite(float(fitres.metrics[keys.EPSILON]))
        and float(fitres.metrics[keys.EPSILON]) > 0
    )
    assert all(a.dtype == np.float64 for a in parameters_to_ndarrays(fitres.parameters))
    draft = reply.content.config_records[keys.ATTESTATION]
    assert set(draft) == {"payload"}  # nothing is signed before the mod has masked it
    assert _charges(cfg) == 1
    record = json.loads((audit_dir(site) / "run-1-round-1.json").read_text())
    assert record["num_examples"] == fitres.num_examples  # the site's own audit copy


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"max_weight": 0.5, "clipping_range": 8.0}, "max_weight 0.5 is below 1"),
        ({"max_weight": 10_000.0, "clipping_range": 1e-9}, "does not fit the clipping range"),
    ],
    ids=["weight", "global-range"],
)
def test_what_needs_no_training_is_refused_before_anything_is_charged(
    tmp_path: Path, state: dict[str, float], match: str
) -> None:
    cfg = _secure_cfg(tmp_path)
    site = simulated_site(cfg, 3, "run-1")
    ctx = RoundContext(run_id="run-1", server_round=1, purpose=cfg.compliance.purpose)
    with pytest.raises(UpdateOutOfRangeError, match=match):
        secure_train(cfg, site, ctx, _global_collect(cfg), _context(**state))
    assert _charges(cfg) == 0


def test_a_site_weighs_at_most_the_announced_max_weight(tmp_path: Path) -> None:
    """The coordinator's share cap reaches the site as max_weight; the site signs what it used."""
    cfg = _secure_cfg(tmp_path)
    site = simulated_site(cfg, 3, "run-1")
    ctx = RoundContext(run_id="run-1", server_round=1, purpose=cfg.compliance.purpose)
    reply = secure_train(
        cfg, site, ctx, _global_collect(cfg), _context(max_weight=50.0, clipping_range=8.0)
    )
    assert compat.recorddict_to_fitres(reply.content, keep_input=True).num_examples == 50
    draft = json.loads(str(reply.content.config_records[keys.ATTESTATION]["payload"]))
    assert draft["num_examples"] == 50 < site.data.n_train


def _masked_reply(msg: Message, vector: list[bytes], payload: dict[str, object]) -> Message:
    content = RecordDict(
        {
            RECORD_KEY_CONFIGS: ConfigRecord({Key.MASKED_PARAMETERS: vector}),  # type: ignore[dict-item]
            keys.ATTESTATION: ConfigRecord({"payload": json.dumps(payload)}),
        }
    )
    return Message(content, reply_to=msg)


def test_the_statement_is_signed_over_exactly_the_masked_bytes() -> None:
    msg = _collect({PRG_KEY: PRG_NAME})
    vector = [b"masked-0", b"masked-1"]
    draft = {
        "statement": ATTESTATION,
        "run_id": "run-1",
        "update_digest": "plain",
        "refused": False,
    }

    reply = _sign_masked(_masked_reply(msg, vector, draft), _context(), lambda c, r: SITE_KEY)

    signed = open_statement(
        ATTESTATION, reply.content.config_records[keys.ATTESTATION], SITE_PUBLIC
    )
    assert signed["update_digest"] == masked_digest(vector) != masked_digest([b"masked-0"])
    assert signed["masking"] == MASKING_NAME


def test_a_reply_that_still_holds_the_plain_update_is_never_signed() -> None:
    msg = _collect({PRG_KEY: PRG_NAME})
    reply = _masked_reply(msg, [b"m"], {"run_id": "run-1"})
    reply.content.array_records["fitres.parameters"] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.ones(3)]), keep_input=True
    )
    with pytest.raises(FedsafeError, match="plain update is still in the reply"):
        _sign_masked(reply, _context(), lambda c, r: SITE_KEY)


def _plain_train(cfg: ExperimentConfig) -> Message:
    model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset), seed=0)
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord(model.state_dict()),
            keys.CONFIG: ConfigRecord(
                {keys.SERVER_ROUND: 1, keys.RUN_ID: "run-1", keys.PURPOSE: cfg.compliance.purpose}
            ),
        }
    )
    return Message(content, dst_node_id=NID, message_type="train")


def test_under_secure_aggregation_a_plain_training_request_is_refused_uncharged(
    tmp_path: Path,
) -> None:
    """A coordinator that asks for the plain update in a secure run gets a refusal."""
    cfg = _secure_cfg(tmp_path)
    reply = build_client_app(cfg)(_plain_train(cfg), _context())
    assert reply.has_error() and reply.error.code == REFUSAL_CODE
    assert "sends updates by secure aggregation" in reply.error.reason
    assert _charges(cfg) == 0


def test_outside_secure_aggregation_a_secagg_request_is_refused_uncharged(tmp_path: Path) -> None:
    cfg = from_dict(ExperimentConfig, {"runs_dir": str(tmp_path), "training": {"rounds": 2}})
    context = _context(max_weight=10_000.0, clipping_range=8.0, current_stage=Stage.SHARE_KEYS)
    reply = build_client_app(cfg)(_global_collect(cfg), context)
    assert reply.has_error()
    assert "sends updates by sealed updates" in reply.error.reason
    assert _charges(cfg) == 0


def test_a_coordinator_that_replays_a_round_gets_no_second_masked_input(tmp_path: Path) -> None:
    """Two sums over different sites would reveal the difference: one contribution a round."""
    cfg = _secure_cfg(tmp_path)
    site = simulated_site(cfg, 3, "run-1")
    ctx = RoundContext(run_id="run-1", server_round=1, purpose=cfg.compliance.purpose)
    context = _context(max_weight=10_000.0, clipping_range=8.0)
    secure_train(cfg, site, ctx, _global_collect(cfg), context)
    with pytest.raises(FedsafeError, match="never contributes to a round twice"):
        secure_train(cfg, site, ctx, _global_collect(cfg), context)
    assert _charges(cfg) == 1


def test_an_unmask_request_for_fewer_alive_nodes_than_the_threshold_is_refused() -> None:
    reply = hardened_secaggplus_mod(_unmask([7, 8], [9, 10]), _context(threshold=2), _never)
    assert reply.has_error() and reply.error.code == SECAGG_REFUSAL_CODE
    assert "2 alive node(s), fewer than 3" in reply.error.reason


def _setup(shares: int, threshold: int) -> Message:
    configs = ConfigRecord(
        {
            Key.STAGE: Stage.SETUP,
            Key.SAMPLE_NUMBER: shares,
            Key.SHARE_NUMBER: shares,
            Key.THRESHOLD: threshold,
            Key.CLIPPING_RANGE: 8.0,
            Key.TARGET_RANGE: 1 << 20,
            Key.MOD_RANGE: 1 << 32,
            Key.MAX_WEIGHT: 100.0,
        }
    )
    return Message(RecordDict({RECORD_KEY_CONFIGS: configs}), dst_node_id=NID, message_type="train")


@pytest.mark.parametrize(("shares", "threshold"), [(4, 2), (2, 2), (10, 5)])
def test_a_minority_threshold_or_fewer_than_three_sites_is_refused_at_setup(
    shares: int, threshold: int
) -> None:
    """With a threshold of half or less, two halves could each be told another story."""
    context = _context(current_stage=Stage.UNMASK)
    reply = hardened_secaggplus_mod(_setup(shares, threshold), context, _never)
    assert reply.has_error() and "strict majority threshold" in reply.error.reason


def test_two_neighbours_with_the_same_public_key_are_refused() -> None:
    configs = ConfigRecord(
        {Key.STAGE: Stage.SHARE_KEYS, "7": [b"a", b"b"], "8": [b"c", b"d"], "9": [b"a", b"e"]}
    )
    msg = Message(RecordDict({RECORD_KEY_CONFIGS: configs}), dst_node_id=NID, message_type="train")
    reply = hardened_secaggplus_mod(msg, _context(current_stage=Stage.SETUP), _never)
    assert reply.has_error() and "the same public key" in reply.error.reason


def _collect_from(sources: list[int], ciphertexts: list[bytes]) -> Message:
    msg = _collect({PRG_KEY: PRG_NAME})
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    configs[Key.SOURCE_LIST], configs[Key.CIPHERTEXT_LIST] = sources, ciphertexts
    return msg


def test_a_withheld_key_share_is_refused_before_the_site_trains() -> None:
    """Masking without neighbour 10 would let the coordinator later strip the 7-10 mask."""
    context = _context(current_stage=Stage.SHARE_KEYS)
    reply = hardened_secaggplus_mod(_collect_from([8, 9], [b"x", b"y"]), context, _never)
    assert (
        reply.has_error() and "no key share forwarded from neighbour(s) [10]" in reply.error.reason
    )


def test_a_key_share_that_does_not_decrypt_is_refused_naming_its_sender() -> None:
    import base64

    key = base64.urlsafe_b64encode(b"k" * 32)
    context = _context(
        current_stage=Stage.SHARE_KEYS,
        public_keys_dict={n: (b"pk1-%d" % n, b"pk2-%d" % n) for n in (7, 8)},
        ss2_dict={8: key},
    )
    reply = hardened_secaggplus_mod(_collect_from([8], [b"not a ciphertext"]), context, _never)
    assert reply.has_error() and "the key share from node 8 does not decrypt" in reply.error.reason


def test_the_one_contribution_per_round_rule_holds_without_dp_too(tmp_path: Path) -> None:
    """A non-private round retrains the same batches: a second sum would difference it out."""
    cfg = from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "training": {"rounds": 2},
            "strategy": {"min_sites": 3},
            "privacy": {"enabled": False, "target_epsilon": None},
            "security": {"secure_aggregation": True},
        },
    )
    site = simulated_site(cfg, 3, "run-1")
    ctx = RoundContext(run_id="run-1", server_round=1, purpose=cfg.compliance.purpose)
    context = _context(max_weight=10_000.0, clipping_range=8.0)
    secure_train(cfg, site, ctx, _global_collect(cfg), context)
    with pytest.raises(FedsafeError, match="never contributes to a round twice"):
        secure_train(cfg, site, ctx, _global_collect(cfg), context)
