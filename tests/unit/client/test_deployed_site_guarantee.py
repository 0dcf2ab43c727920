"""A deployed site (site.yaml, its own keys): the same guarantees, with the deployed defaults.

No evaluation metric leaves by default, the test-only seed is refused, and a budget store edited
behind the site's back stops `fedsafe site start` before it connects.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fedsafe.client.budget import BudgetStore, StoreIntegrityError
from fedsafe.client.deploy import check_site
from fedsafe.client.local_round import RoundContext, evaluate_round, train_round
from fedsafe.client.site import deployed_site
from fedsafe.client.site_kit import init_site_kit
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.crypto.pki import init_ca, init_server_sealing_key
from fedsafe.common.data import dataset_info
from fedsafe.common.errors import FedsafeError
from fedsafe.common.models import build_model
from fedsafe.common.privacy.randomness import TEST_SEED_ENV

SCHEMA = """\
target: {column: default, positive: [yes], negative: [no]}
missing: error
columns:
  age: numeric
  income: numeric
"""


@pytest.fixture
def kit(tmp_path: Path) -> Path:
    made = init_site_kit(
        "bank-north",
        tmp_path / "kit",
        superlink="127.0.0.1:9092",
        ca_cert=init_ca(tmp_path / "ca", "test CA").cert,
        server_sealing_pub=init_server_sealing_key(tmp_path / "server")[1],
    )
    rng = np.random.default_rng(0)
    rows = [
        f"{int(a)},{int(i)},{'yes' if a > 50 else 'no'}"
        for a, i in zip(rng.integers(20, 80, 120), rng.integers(20_000, 90_000, 120), strict=True)
    ]
    (made.directory / "schema.yaml").write_text(SCHEMA)
    (made.directory / "data.csv").write_text("age,income,default\n" + "\n".join(rows) + "\n")
    return made.site_yaml


def _cfg(kit: Path) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "dataset": {
                "name": "site_files",
                "schema": str(kit.parent / "schema.yaml"),
                "files": [str(kit.parent / "data.csv")],
            },
            "training": {"rounds": 2},
            "security": {"sealed_updates": False},
        },
    )


def _state(cfg: ExperimentConfig) -> dict[str, torch.Tensor]:
    info = dataset_info(cfg.dataset.name, cfg.dataset)
    model = build_model(
        "mlp", n_features=info.n_features, n_classes=2, hidden=cfg.model.hidden, seed=0
    )
    return dict(model.state_dict())


CTX = RoundContext(run_id="run-1", server_round=1, purpose="credit-risk-modelling")


def test_a_deployed_site_trains_and_releases_no_evaluation_by_default(kit: Path) -> None:
    cfg = _cfg(kit)
    site = deployed_site(kit, cfg)

    outcome = train_round(cfg, site, _state(cfg), CTX)

    assert '"randomness":"os-csprng"' in outcome.attestation["payload"]
    assert evaluate_round(cfg, site, _state(cfg), CTX) == {}
    with BudgetStore.open(site.budget_store) as store:
        assert [r["mode"] for r in store.releases(site.dataset_id)] == ["off"]


def test_a_deployed_site_refuses_the_seeded_noise_switch(
    kit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEST_SEED_ENV, "1")
    cfg = _cfg(kit)
    with pytest.raises(FedsafeError, match="test-only"):
        train_round(cfg, deployed_site(kit, cfg), _state(cfg), CTX)


def test_an_edited_store_stops_site_start_before_it_connects(kit: Path) -> None:
    cfg = _cfg(kit)
    site = deployed_site(kit, cfg)
    train_round(cfg, site, _state(cfg), CTX)
    with sqlite3.connect(site.budget_store) as db:
        db.execute("UPDATE budget_charges SET steps = 1")

    with pytest.raises(StoreIntegrityError, match="changed outside fedsafe"):
        check_site(kit)


def test_a_renamed_dataset_id_keeps_its_budget(kit: Path) -> None:
    cfg = _cfg(kit)
    train_round(cfg, deployed_site(kit, cfg), _state(cfg), CTX)
    data = yaml.safe_load(kit.read_text())
    data["dataset_id"] = "bank-north-v2"
    kit.write_text(yaml.safe_dump(data))

    with pytest.raises(FedsafeError, match="already accounted as data set 'bank-north-v1'"):
        train_round(cfg, deployed_site(kit, cfg), _state(cfg), RoundContext("run-2", 1, "x"))


def test_a_release_policy_in_site_yaml_is_read_and_checked(kit: Path) -> None:
    data = yaml.safe_load(kit.read_text())
    data["release"] = {"evaluation": "rounded", "min_count": 5}
    kit.write_text(yaml.safe_dump(data))
    assert deployed_site(kit, _cfg(kit)).release.evaluation == "rounded"
    data["release"] = {"evaluation": "everything"}
    kit.write_text(yaml.safe_dump(data))
    with pytest.raises(FedsafeError, match="release.evaluation"):
        deployed_site(kit, _cfg(kit))


def test_the_rows_fingerprint_does_not_depend_on_the_runs_split(kit: Path) -> None:
    """The coordinator picks the held-out share; the site's budget identity must not move."""
    import dataclasses

    cfg = _cfg(kit)
    other = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, test_fraction=0.4))
    first, second = deployed_site(kit, cfg), deployed_site(kit, other)
    assert not np.array_equal(first.data.y_train, second.data.y_train)
    assert first.fingerprint == second.fingerprint


def _held_out(site) -> set[bytes]:  # type: ignore[no-untyped-def]
    return {row.tobytes() for row in site.data.x_test}


def test_the_split_is_keyed_by_the_site_not_by_the_runs_seed(kit: Path) -> None:
    """Found in review: with the split keyed by the run's seed, a coordinator could search for
    a seed that leaves one target record alone on the training side and read train-or-refuse."""
    import dataclasses

    from fedsafe.common.data.site_file import site_data_from_file

    cfg = _cfg(kit)
    one = deployed_site(kit, cfg)
    other_seed = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, seed=12345))
    assert _held_out(deployed_site(kit, other_seed)) == _held_out(one)  # the seed is ignored
    public = site_data_from_file(
        kit.parent / "data.csv", kit.parent / "schema.yaml", seed=cfg.dataset.seed
    )
    assert {r.tobytes() for r in public.x_test} != _held_out(one)  # not the seed's split


@pytest.mark.parametrize("fraction", [1 - 1e-12, 0.9, 0.01])
def test_a_test_fraction_outside_the_sites_range_is_refused_without_counts(
    kit: Path, fraction: float
) -> None:
    import dataclasses

    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedsafe.client.app import build_client_app
    from fedsafe.common import keys

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, 1
    cfg = _cfg(kit)
    cfg = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, test_fraction=fraction))
    with pytest.raises(FedsafeError, match=r"holds out between 0.05 and 0.5"):
        deployed_site(kit, cfg)
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"site-config": str(kit)},
        state=RecordDict(),
        run_config={},
    )
    query = Message(
        RecordDict({keys.CONFIG: ConfigRecord({keys.RUN_ID: "run-1", keys.PURPOSE: "x"})}),
        dst_node_id=7,
        message_type=MessageType.QUERY,
    )
    reply = build_client_app(cfg)(query, context)
    assert reply.has_error()
    reason = reply.error.reason
    assert "see the site's log" in reason and "120" not in reason and str(kit.parent) not in reason
