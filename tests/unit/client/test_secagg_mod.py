"""The hardened SecAgg+ client mod in-process: unsafe unmask requests refused, ChaCha20 in force."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.compat.common import recorddict_compat as compat

from fedsafe.client.secagg import (
    SECAGG_REFUSAL_CODE,
    SecAggSiteClient,
    UpdateOutOfRangeError,
    _guard_range,
    audit_dir,
    hardened_secaggplus_mod,
)
from fedsafe.client.site import simulated_site
from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.data import dataset_info
from fedsafe.common.models import model_for
from fedsafe.common.secagg import PATCH_POINTS, PRG_KEY, PRG_NAME, chacha_rand_gen

NID = 7
client_mod = importlib.import_module(PATCH_POINTS[0][0])


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower's runtime names the process' run, node and task; a unit test does it by hand."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _context(**overrides: object) -> Context:
    """A node that finished the masked-vector stage with neighbours 7, 8 and 9."""
    state = SecAggPlusState(current_stage=Stage.COLLECT_MASKED_VECTORS, nid=NID, threshold=2)
    state.public_keys_dict = {n: (b"pk1-%d" % n, b"pk2-%d" % n) for n in (7, 8, 9)}
    state.rd_seed_share_dict = {n: b"seed-share-%d" % n for n in (7, 8, 9)}
    state.sk1_share_dict = {n: b"sk1-share-%d" % n for n in (7, 8, 9)}
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

    reply = hardened_secaggplus_mod(_unmask([7, 8, 9], [9]), context, _never)

    assert reply.has_error() and reply.error.code == SECAGG_REFUSAL_CODE
    assert "node(s) [9] are listed both alive and dropped" in reply.error.reason
    assert (
        dict(context.state.config_records[RECORD_KEY_STATE]) == before
    )  # the protocol did not advance


def test_an_honest_unmask_request_reaches_flowers_mod() -> None:
    reply = hardened_secaggplus_mod(_unmask([7, 8], [9]), _context(), _never)

    assert not reply.has_error()
    configs = reply.content.config_records[RECORD_KEY_CONFIGS]
    assert list(configs[Key.NODE_ID_LIST]) == [7, 8, 9]
    assert list(configs[Key.SHARE_LIST]) == [b"seed-share-7", b"seed-share-8", b"sk1-share-9"]


def test_the_mod_runs_flower_with_the_chacha20_generator_and_restores_it() -> None:
    seen = []

    def app(msg: Message, ctxt: Context) -> Message:
        seen.append(client_mod.pseudo_rand_gen)
        return Message(RecordDict(), reply_to=msg)

    query = Message(RecordDict(), dst_node_id=NID, message_type="query")
    hardened_secaggplus_mod(query, _context(), app)

    assert seen == [chacha_rand_gen]
    assert client_mod.pseudo_rand_gen is pseudo_rand_gen


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


def test_fit_trains_with_dp_charges_the_site_and_keeps_the_signed_statement_local(
    tmp_path: Path,
) -> None:
    cfg = from_dict(ExperimentConfig, {"runs_dir": str(tmp_path), "training": {"rounds": 2}})
    model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset), seed=0)
    client = SecAggSiteClient(cfg, _context())
    config = {
        keys.RUN_ID: "run-1",
        keys.SERVER_ROUND: 1,
        keys.PURPOSE: cfg.compliance.purpose,
        PRG_KEY: PRG_NAME,
    }

    arrays, num_examples, metrics = client.fit(
        [v.numpy() for v in model.state_dict().values()], config
    )

    site = simulated_site(cfg, 3, "run-1")
    assert metrics[keys.SITE_NAME] == site.name and num_examples == site.data.n_train
    assert math.isfinite(float(metrics[keys.EPSILON])) and float(metrics[keys.EPSILON]) > 0
    assert all(a.dtype == np.float64 for a in arrays)  # quantised at full precision
    record = json.loads((audit_dir(site) / "run-1-round-1.json").read_text())
    assert (
        record["num_examples"] == num_examples
        and "update_digest" in record["attestation"]["payload"]
    )
    assert client.get_properties({keys.RUN_ID: "run-1"}) == {
        keys.SITE_NAME: site.name,
        keys.NUM_EXAMPLES: num_examples,
    }
