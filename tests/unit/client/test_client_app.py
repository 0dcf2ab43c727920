"""The ClientApp in-process: a site sends back model-shaped arrays and scalar metrics only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedsafe.client.app import REFUSAL_CODE, build_client_app
from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.data import dataset_info, load_site
from fedsafe.common.models import build_model


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower's runtime names the process' run, node and task; a unit test does it by hand."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


@pytest.fixture
def cfg(tmp_path: Path) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "training": {"rounds": 2},
            "security": {"sealed_updates": False},
        },
    )


def _message(cfg: ExperimentConfig, kind: str, server_round: int) -> Message:
    info = dataset_info(cfg.dataset.name)
    model = build_model(
        cfg.model.name, n_features=info.n_features, n_classes=2, hidden=cfg.model.hidden
    )
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord(model.state_dict()),
            keys.CONFIG: ConfigRecord(
                {
                    keys.SERVER_ROUND: server_round,
                    keys.RUN_ID: "run-1",
                    keys.PURPOSE: cfg.compliance.purpose,
                }
            ),
        }
    )
    return Message(content=content, dst_node_id=7, message_type=kind)


def _context(partition: int) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config={keys.PARTITION_ID: partition},
        state=RecordDict(),
        run_config={},
    )


def test_train_reply_carries_only_model_shaped_arrays_and_scalars(cfg: ExperimentConfig) -> None:
    app, context, msg = build_client_app(cfg), _context(3), _message(cfg, "train", 1)
    site = load_site(cfg.dataset, 3)

    reply = app(msg, context)

    assert not reply.has_error()
    content = reply.content
    assert set(content.keys()) == {keys.ARRAYS, keys.METRICS, keys.SITE, keys.ATTESTATION}
    sent = content[keys.ARRAYS]
    expected = msg.content[keys.ARRAYS]
    assert list(sent.keys()) == list(expected.keys())
    for name in expected:
        assert sent[name].shape == expected[name].shape
    n_rows = site.n_train
    assert all(n_rows not in a.shape for a in sent.values())  # nothing is row-shaped
    assert set(content[keys.METRICS].keys()) == set(keys.TRAIN_METRICS)
    assert all(isinstance(v, float) for v in content[keys.METRICS].values())
    assert dict(content[keys.SITE]) == {keys.SITE_NAME: "switzerland"}


@pytest.mark.parametrize("kind", ["train", "evaluate"])
def test_a_model_sent_as_another_record_kind_is_refused_not_raised(
    cfg: ExperimentConfig, kind: str
) -> None:
    msg = _message(cfg, kind, 1)
    msg.content[keys.ARRAYS] = ConfigRecord({"w": 1.0})  # the model's name, not an ArrayRecord

    reply = build_client_app(cfg)(msg, _context(0))

    assert reply.has_error() and reply.error.code == REFUSAL_CODE
    assert "malformed request" in str(reply.error.reason)


@pytest.mark.parametrize("mu", ["0.5", [0.5], True])
def test_a_proximal_mu_that_is_not_a_number_is_refused(cfg: ExperimentConfig, mu: object) -> None:
    msg = _message(cfg, "train", 1)
    msg.content[keys.CONFIG][keys.PROXIMAL_MU] = mu

    reply = build_client_app(cfg)(msg, _context(0))

    assert reply.has_error() and reply.error.code == REFUSAL_CODE
    assert "proximal-mu" in str(reply.error.reason)


def test_a_config_sent_as_a_metric_record_is_refused(cfg: ExperimentConfig) -> None:
    msg = _message(cfg, "train", 1)
    msg.content[keys.CONFIG] = MetricRecord({keys.SERVER_ROUND: 1})

    reply = build_client_app(cfg)(msg, _context(0))

    assert reply.has_error() and reply.error.code == REFUSAL_CODE


def test_epsilon_is_cumulative_over_rounds_in_the_sites_own_store(cfg: ExperimentConfig) -> None:
    """The spend lives in the site's store, not in Flower's context.state: a fresh context (a
    restarted SuperNode) still composes round 2 onto round 1. The oracle is Opacus' own RDP
    accountant over the steps the replies report, not fedsafe's accountant."""
    from opacus.accountants import RDPAccountant

    app = build_client_app(cfg)

    first = app(_message(cfg, "train", 1), _context(0)).content[keys.METRICS]
    second = app(_message(cfg, "train", 2), _context(0)).content[keys.METRICS]

    oracle = RDPAccountant()
    oracle.history = [
        (m[keys.NOISE_MULTIPLIER], m[keys.SAMPLE_RATE], int(m[keys.STEPS])) for m in (first, second)
    ]
    assert second[keys.EPSILON] > first[keys.EPSILON]
    assert second[keys.EPSILON] == pytest.approx(oracle.get_epsilon(cfg.privacy.delta), rel=1e-9)
    assert second[keys.EPSILON] <= cfg.privacy.target_epsilon


def test_evaluate_reply_has_metrics_and_no_arrays(cfg: ExperimentConfig) -> None:
    app = build_client_app(cfg)
    assert not app(
        _message(cfg, "train", 1), _context(1)
    ).has_error()  # evaluates what it trained in
    reply = app(_message(cfg, "evaluate", 1), _context(1))
    assert set(reply.content.keys()) == {keys.METRICS, keys.SITE}
    metrics = reply.content[keys.METRICS]
    held_out = len(load_site(cfg.dataset, 1).y_test)  # Hungary's held-out rows
    assert 0 <= metrics[keys.ACCURACY] <= 1 and metrics[keys.NUM_EXAMPLES] == held_out
    assert math.isfinite(metrics[keys.LOSS]) and not np.isnan(metrics[keys.AUROC])


def test_a_sealed_reply_carries_no_plaintext_arrays(tmp_path: Path) -> None:
    from fedsafe.common import crypto
    from fedsafe.common.crypto.pki import init_server_sealing_key, load_sealing_private_key
    from fedsafe.common.layout import coordinator_dir
    from fedsafe.common.wire import sealing_context, unpack_arrays

    cfg = from_dict(ExperimentConfig, {"runs_dir": str(tmp_path), "training": {"rounds": 2}})
    key_file, _ = init_server_sealing_key(coordinator_dir(cfg) / "keys")
    msg = _message(cfg, "train", 1)

    reply = build_client_app(cfg)(msg, _context(2))

    assert not reply.has_error()
    assert keys.ARRAYS not in reply.content and keys.SEALED in reply.content
    blob = bytes(reply.content[keys.SEALED]["blob"])
    plain = crypto.open_sealed(
        load_sealing_private_key(key_file),
        blob,
        context=sealing_context("run-1", 1, "va_long_beach"),
    )
    assert list(unpack_arrays(plain)) == list(msg.content[keys.ARRAYS].keys())


def test_a_replayed_round_gets_the_same_update_without_a_new_charge(cfg: ExperimentConfig) -> None:
    from fedsafe.client.budget import BudgetStore

    app, msg = build_client_app(cfg), _message(cfg, "train", 1)
    first = app(msg, _context(0)).content
    again = app(
        _message(cfg, "train", 1), _context(0)
    ).content  # the server resumed and asked again

    assert bytes(first[keys.ATTESTATION]["signature"]) == bytes(
        again[keys.ATTESTATION]["signature"]
    )
    for name in first[keys.ARRAYS]:
        assert np.array_equal(first[keys.ARRAYS][name].numpy(), again[keys.ARRAYS][name].numpy())
    store = BudgetStore.open(Path(cfg.runs_dir) / "sites" / "cleveland" / "budget.sqlite")
    assert len(store.history("heart_disease/cleveland")) == 1
    store.close()
