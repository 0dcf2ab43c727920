"""The site's guarantee tested as the parties it guards against.

As the coordinator: the same public config twice, a replay with lower noise, a run in another
unit, crafted evaluation requests. As whoever can write the site's files: the budget store
deleted, edited, rewound, replaced by a mistyped path, its head removed, its rows renamed.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedsafe.client import local_round
from fedsafe.client.app import build_client_app
from fedsafe.client.budget import BudgetStore, StoreAnchor, StoreIntegrityError, acknowledge_store
from fedsafe.client.local_round import RoundContext, evaluate_round, round_seed, train_round
from fedsafe.client.site import simulated_site
from fedsafe.common import keys
from fedsafe.common.attestation import arrays_digest
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.data import dataset_info
from fedsafe.common.errors import FedsafeError
from fedsafe.common.models import build_model
from fedsafe.common.privacy.randomness import TEST_SEED_ENV, SeededRandomness
from fedsafe.common.release_policy import ReleasePolicy
from fedsafe.common.training import DpSettings, train_local

SITES = ("cleveland", "hungary", "va_long_beach", "switzerland")


@pytest.fixture(autouse=True)
def task_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _cfg(tmp_path: Path, **privacy: object) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "training": {"rounds": 3},
            "privacy": privacy,
            "security": {"sealed_updates": False},
        },
    )


def _state(cfg: ExperimentConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    info = dataset_info(cfg.dataset.name)
    model = build_model(
        cfg.model.name, n_features=info.n_features, n_classes=2, hidden=cfg.model.hidden, seed=seed
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ctx(server_round: int = 1, run_id: str = "run-1") -> RoundContext:
    return RoundContext(run_id=run_id, server_round=server_round, purpose="cardiology-research")


def _site(cfg: ExperimentConfig, partition: int = 0, run_id: str = "run-1"):  # type: ignore[no-untyped-def]
    return simulated_site(cfg, partition, run_id)


def _store(cfg: ExperimentConfig, site: str = "cleveland") -> Path:
    return Path(cfg.runs_dir) / "sites" / site / "budget.sqlite"


# --- the coordinator cannot predict the noise ---------------------------------------------


def test_identical_configs_release_different_updates_at_every_site(tmp_path: Path) -> None:
    released = []
    for attempt in ("a", "b"):
        cfg = _cfg(tmp_path / attempt)
        released.append(
            [train_round(cfg, _site(cfg, i), _state(cfg), _ctx()).state for i in range(4)]
        )
    for site, (first, second) in zip(SITES, zip(*released, strict=True), strict=True):
        assert not any(torch.equal(first[k], second[k]) for k in first), site


def test_the_config_seed_does_not_regenerate_the_noise(tmp_path: Path) -> None:
    """The attack that worked before: rebuild the release from the public seed and the data."""
    cfg = _cfg(tmp_path)
    site = _site(cfg)
    outcome = train_round(cfg, site, _state(cfg), _ctx())
    guess = build_model(
        "mlp",
        n_features=dataset_info(cfg.dataset.name).n_features,
        n_classes=2,
        hidden=cfg.model.hidden,
        seed=0,
    )
    guess.load_state_dict(_state(cfg))
    train_local(
        guess,
        site.data.x_train,
        site.data.y_train,
        epochs=1,
        batch_size=32,
        learning_rate=cfg.training.learning_rate,
        device=torch.device("cpu"),
        dp=DpSettings(outcome.metrics[keys.NOISE_MULTIPLIER], cfg.privacy.max_grad_norm),
        randomness=SeededRandomness(round_seed(cfg, site.name, 1)),
    )
    ours = outcome.state
    assert not any(torch.equal(ours[k], v) for k, v in guess.state_dict().items())
    assert outcome.attestation["payload"].count('"randomness":"os-csprng"') == 1


def test_a_deployed_site_refuses_the_test_only_seed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fedsafe.common.privacy.randomness import site_randomness

    monkeypatch.setenv(TEST_SEED_ENV, "3")
    with pytest.raises(FedsafeError, match="test-only"):
        site_randomness(deployed=True)
    cfg = _cfg(tmp_path)
    outcome = train_round(cfg, _site(cfg), _state(cfg), _ctx())  # a simulation may use it...
    assert '"randomness":"seeded-test-only"' in outcome.attestation["payload"]  # ...and says so


# --- a replay trains only as reserved ---------------------------------------------------------


def _crash_mid_round(cfg: ExperimentConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt("killed mid-round")

    monkeypatch.setattr(local_round, "_train", boom)
    with pytest.raises(KeyboardInterrupt):
        train_round(cfg, _site(cfg), _state(cfg), _ctx())
    monkeypatch.undo()


def test_a_replay_with_lowered_noise_is_refused_and_the_cap_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    _crash_mid_round(cfg, monkeypatch)
    with BudgetStore.open(_store(cfg)) as store:
        reserved = store.history("heart_disease/cleveland")
    lowered = _cfg(tmp_path, target_epsilon=None, noise_multiplier=0.35)

    with pytest.raises(FedsafeError, match=r"noise_multiplier reserved [0-9.]+, asked 0.35"):
        train_round(lowered, _site(lowered), _state(lowered), _ctx())

    with BudgetStore.open(_store(cfg)) as store:
        assert store.history("heart_disease/cleveland") == reserved  # nothing trained or charged
        assert store.refusals()[-1].reason == "replay"
    # The same replay with the reserved parameters goes through, and trains exactly once.
    outcome = train_round(cfg, _site(cfg), _state(cfg), _ctx())
    assert outcome.metrics[keys.NOISE_MULTIPLIER] == reserved[0].noise_multiplier


def test_a_replay_on_another_model_or_config_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    _crash_mid_round(cfg, monkeypatch)
    with pytest.raises(FedsafeError, match="input_digest reserved"):
        train_round(cfg, _site(cfg), _state(cfg, seed=9), _ctx())
    changed = dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, learning_rate=0.5)
    )
    with pytest.raises(FedsafeError, match="config_digest reserved"):
        train_round(changed, _site(changed), _state(cfg), _ctx())


# --- the unit is pinned ---------------------------------------------------------------------


@pytest.mark.parametrize("change", [{"delta": 1e-3}, {"accountant": "prv"}])
def test_a_later_run_in_another_unit_is_refused_with_the_pinned_unit(
    tmp_path: Path, change: dict[str, object]
) -> None:
    cfg = _cfg(tmp_path)
    train_round(cfg, _site(cfg), _state(cfg), _ctx())
    other = _cfg(tmp_path, **change)

    with pytest.raises(FedsafeError, match=r"pinned to delta=1e-05 with accountant 'rdp'"):
        train_round(other, _site(other, run_id="run-2"), _state(other), _ctx(run_id="run-2"))


def test_delta_not_below_one_over_n_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, delta=0.01)  # switzerland holds 123 records
    with pytest.raises(FedsafeError, match=r"not below 1/n"):
        train_round(cfg, _site(cfg, 3), _state(cfg), _ctx())


# --- the store is tamper-evident ------------------------------------------------------------


def _two_rounds(cfg: ExperimentConfig) -> None:
    for r in (1, 2):
        train_round(cfg, _site(cfg), _state(cfg), _ctx(r))


def _round_three(cfg: ExperimentConfig) -> None:
    train_round(cfg, _site(cfg), _state(cfg), _ctx(3))


def test_deleting_the_store_is_detected(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _two_rounds(cfg)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{_store(cfg)}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreIntegrityError, match="not the store this site signed for"):
        _round_three(cfg)


def test_editing_a_charge_row_is_detected(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _two_rounds(cfg)
    with sqlite3.connect(_store(cfg)) as db:
        db.execute("UPDATE budget_charges SET noise_multiplier = 50.0 WHERE id = 1")
    with pytest.raises(StoreIntegrityError, match="changed outside fedsafe"):
        _round_three(cfg)


def test_deleting_a_charge_row_is_detected(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _two_rounds(cfg)
    with sqlite3.connect(_store(cfg)) as db:
        db.execute("DELETE FROM budget_charges WHERE id = 2")
    with pytest.raises(StoreIntegrityError, match="changed outside fedsafe"):
        _round_three(cfg)


def test_a_charge_deleted_between_commit_and_head_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head signs the state the write committed, never whatever the file holds a moment
    later: an attacker racing the commit to delete the new charge is found at the next open."""
    cfg = _cfg(tmp_path)
    _two_rounds(cfg)
    real_settle = StoreAnchor.settle

    def racing_settle(self: StoreAnchor, pending: object) -> None:
        with sqlite3.connect(_store(cfg)) as db:
            db.execute("DELETE FROM budget_charges WHERE id = (SELECT MAX(id) FROM budget_charges)")
        real_settle(self, pending)  # type: ignore[arg-type]

    monkeypatch.setattr(StoreAnchor, "settle", racing_settle)
    with pytest.raises(StoreIntegrityError, match="changed outside fedsafe"):
        _round_three(cfg)  # the race happens inside the reservation's write; complete finds it
    monkeypatch.setattr(StoreAnchor, "settle", real_settle)
    with pytest.raises(StoreIntegrityError, match="changed outside fedsafe"):
        _round_three(cfg)


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the main file, as a backup tool would before copying it."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_rewinding_the_store_to_an_old_copy_is_detected(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    train_round(cfg, _site(cfg), _state(cfg), _ctx(1))
    _checkpoint(_store(cfg))
    backup = tmp_path / "backup.sqlite"
    shutil.copy(_store(cfg), backup)
    train_round(cfg, _site(cfg), _state(cfg), _ctx(2))
    _checkpoint(_store(cfg))
    shutil.copy(backup, _store(cfg))
    with pytest.raises(StoreIntegrityError, match="changed outside fedsafe"):
        _round_three(cfg)


def test_deleting_the_signed_head_is_detected(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _two_rounds(cfg)
    (Path(cfg.runs_dir) / "sites" / "cleveland" / "keys" / "budget-head.json").unlink()
    with pytest.raises(StoreIntegrityError, match="signed head .* is missing"):
        _round_three(cfg)


def test_a_head_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    from fedsafe.common import crypto

    cfg = _cfg(tmp_path)
    _two_rounds(cfg)
    forger = StoreAnchor(
        Path(cfg.runs_dir) / "sites" / "cleveland" / "keys" / "budget-head.json",
        crypto.generate_signing_key()[0],
    )
    with BudgetStore.open(_store(cfg)) as store, store._engine.connect() as conn:  # noqa: SLF001
        from fedsafe.client.budget.anchor import state_digest
        from fedsafe.client.budget.schema import store_id

        forger.write(store=store_id(conn), digest=state_digest(conn), pending=None, charges=0)
    with pytest.raises(StoreIntegrityError, match="does not verify with this site's key"):
        _round_three(cfg)


def test_a_new_store_needs_a_recorded_acknowledgement(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _two_rounds(cfg)
    site = _site(cfg)
    moved = tmp_path / "typo" / "budget.sqlite"  # a mistyped budget_store path
    with pytest.raises(StoreIntegrityError, match="mistyped path"):
        BudgetStore.open(moved, anchor=site.anchor)

    detail = acknowledge_store(moved, site.anchor, reason="restored by J. Admin, ticket 42")

    assert detail["previous_charges"] == 2
    with BudgetStore.open(moved, anchor=site.anchor) as store:
        (ack,) = store.acknowledgements()
        assert ack.reason == "restored by J. Admin, ticket 42"
        assert ack.detail["previous_charges"] == 2


def test_the_same_rows_under_another_name_keep_their_budget(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    site = _site(cfg)
    train_round(cfg, site, _state(cfg), _ctx())
    renamed = dataclasses.replace(site, dataset_id="cleveland-renamed")

    with pytest.raises(
        FedsafeError, match="already accounted as data set 'heart_disease/cleveland'"
    ):
        train_round(cfg, renamed, _state(cfg), _ctx(2))


def test_other_rows_under_the_same_name_are_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    site = _site(cfg)
    train_round(cfg, site, _state(cfg), _ctx())
    hashes = site.data.record_hashes.copy()
    hashes[0] ^= 1  # one record edited
    data = dataclasses.replace(site.data, raw_hashes=hashes)

    with pytest.raises(FedsafeError, match="rows of 'heart_disease/cleveland' changed"):
        train_round(cfg, dataclasses.replace(site, data=data), _state(cfg), _ctx(2))


def test_the_same_rows_plus_one_under_another_name_keep_their_budget(tmp_path: Path) -> None:
    """Found in review: one duplicated row made a new fingerprint, so a new name started afresh."""
    cfg = _cfg(tmp_path)
    site = _site(cfg)
    train_round(cfg, site, _state(cfg), _ctx())
    x = np.concatenate([site.data.x_train, site.data.x_train[:1] + 0.5])  # one new patient
    y = np.concatenate([site.data.y_train, site.data.y_train[:1]])
    hashes = np.concatenate([site.data.record_hashes, [np.uint64(12345)]])
    grown = dataclasses.replace(site.data, x_train=x, y_train=y, raw_hashes=hashes)
    assert grown.fingerprint != site.data.fingerprint
    renamed = dataclasses.replace(site, dataset_id="cleveland-plus-one", data=grown)

    with pytest.raises(FedsafeError, match=r"303 of these 304 records are already accounted"):
        train_round(cfg, renamed, _state(cfg), _ctx(2))
    with BudgetStore.open(_store(cfg), anchor=site.anchor) as store:
        assert store.refusals("cleveland-plus-one")[0].reason == "data"
        assert store.history("cleveland-plus-one") == []


# --- what leaves besides the DP update ------------------------------------------------------


def _evaluate(cfg: ExperimentConfig, release: ReleasePolicy, state=None, r: int = 1):  # type: ignore[no-untyped-def]
    site = dataclasses.replace(_site(cfg), release=release)
    return evaluate_round(cfg, site, state if state is not None else _state(cfg), _ctx(r))


def test_evaluate_only_a_round_the_site_trained_in(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    with pytest.raises(FedsafeError, match="round it trained in"):
        _evaluate(cfg, ReleasePolicy())


def test_a_second_evaluation_of_a_round_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    train_round(cfg, _site(cfg), _state(cfg), _ctx())
    first = _evaluate(cfg, ReleasePolicy())
    assert _evaluate(cfg, ReleasePolicy()) == first  # the same model: the same release again
    crafted = _state(cfg, seed=5)
    with pytest.raises(FedsafeError, match="second evaluation"):
        _evaluate(cfg, ReleasePolicy(), crafted)


def test_a_crafted_all_positive_model_reads_no_count_under_safe_policies(tmp_path: Path) -> None:
    """The attack: a model that says 'positive' to all gives accuracy = positives / n."""
    cfg = _cfg(tmp_path)
    site = _site(cfg)
    positives, n = int(site.data.y_test.sum()), len(site.data.y_test)
    crafted = _state(cfg)
    last = [k for k in crafted if k.endswith("bias")][-1]
    crafted = {k: torch.zeros_like(v) for k, v in crafted.items()}
    crafted[last] = torch.tensor([-10.0, 10.0])
    released = {}
    for mode in ("exact", "rounded", "dp", "off"):
        run = f"run-{mode}"
        train_round(cfg, _site(cfg, run_id=run), _state(cfg), _ctx(run_id=run))
        s = dataclasses.replace(_site(cfg, run_id=run), release=ReleasePolicy(evaluation=mode))  # type: ignore[arg-type]
        released[mode] = evaluate_round(cfg, s, crafted, _ctx(run_id=run))
    assert released["exact"][keys.ACCURACY] * released["exact"][keys.NUM_EXAMPLES] == positives
    assert released["off"] == {}
    assert (
        released["rounded"][keys.NUM_EXAMPLES] % 10 == 0
        and released["rounded"][keys.NUM_EXAMPLES] != n
    )
    assert set(released["dp"]) == {keys.NUM_EXAMPLES, keys.ACCURACY, keys.LOSS}
    with BudgetStore.open(_store(cfg)) as store:
        kinds = [r.kind for r in store.charges("heart_disease/cleveland")]
        assert kinds.count("evaluate") == 1  # only the dp release is charged
        assert {r["mode"] for r in store.releases("heart_disease/cleveland")} == set(released)


def test_training_loss_and_exact_sizes_leave_only_under_exact(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    site = dataclasses.replace(_site(cfg), release=ReleasePolicy(evaluation="rounded"))
    outcome = train_round(cfg, site, _state(cfg), _ctx())
    assert keys.LOSS not in outcome.metrics
    assert outcome.metrics[keys.NUM_EXAMPLES] % 10 == 0
    assert (
        f'"num_examples":{int(outcome.metrics[keys.NUM_EXAMPLES])}'
        in outcome.attestation["payload"]
    )


# --- the smaller ones -------------------------------------------------------------------------


def test_class_weights_under_dp_need_a_declared_prevalence(tmp_path: Path) -> None:
    cfg = from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "training": {"class_weighting": "balanced"},
            "security": {"sealed_updates": False},
        },
    )
    with pytest.raises(FedsafeError, match="declared"):
        train_round(cfg, _site(cfg), _state(cfg), _ctx())
    declared = dataclasses.replace(
        cfg, federation=dataclasses.replace(cfg.federation, class_prevalence=(0.55, 0.45))
    )
    train_round(declared, _site(declared), _state(declared), _ctx())


def test_a_nonprivate_round_is_on_record_and_makes_epsilon_infinite(tmp_path: Path) -> None:
    off = from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "privacy": {"enabled": False, "target_epsilon": None},
            "security": {"sealed_updates": False},
        },
    )
    train_round(off, _site(off), _state(off), _ctx(run_id="baseline"))
    with BudgetStore.open(_store(off)) as store:
        assert store.spent("heart_disease/cleveland", delta=1e-5, accountant="rdp") == float("inf")
    cfg = _cfg(tmp_path)
    with pytest.raises(FedsafeError, match="budget exceeded"):
        train_round(cfg, _site(cfg), _state(cfg), _ctx())


def test_a_deployed_site_refuses_a_nonprivate_run(tmp_path: Path) -> None:
    off = from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "privacy": {"enabled": False, "target_epsilon": None},
            "security": {"sealed_updates": False},
        },
    )
    site = dataclasses.replace(_site(off), require_dp=True)
    with pytest.raises(FedsafeError, match="only with DP-SGD"):
        train_round(off, site, _state(off), _ctx())
    assert (
        not _store(off).exists()
        or BudgetStore.open(_store(off)).history("heart_disease/cleveland") == []
    )


def test_attestations_sign_noise_and_sample_rate(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    outcome = train_round(cfg, _site(cfg), _state(cfg), _ctx())
    payload = outcome.attestation["payload"]
    assert f'"noise_multiplier":{outcome.metrics[keys.NOISE_MULTIPLIER]!r}' in payload
    assert f'"sample_rate":{outcome.metrics[keys.SAMPLE_RATE]!r}' in payload


def test_the_client_app_turns_a_refusal_into_an_error_reply(tmp_path: Path) -> None:
    """RoundRefusedError with all its fields: the ClientApp refuses, it does not crash."""
    cfg = _cfg(tmp_path)
    app = build_client_app(cfg)
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord(_state(cfg)),
            keys.CONFIG: ConfigRecord(
                {keys.SERVER_ROUND: 1, keys.RUN_ID: "run-1", keys.PURPOSE: "x"}
            ),
        }
    )
    context = Context(
        run_id=1, node_id=7, node_config={keys.PARTITION_ID: 0}, state=RecordDict(), run_config={}
    )
    reply = app(Message(content=content, dst_node_id=7, message_type="evaluate"), context)
    assert reply.has_error() and "round it trained in" in reply.error.reason


def test_digest_helper_is_stable() -> None:
    a = {"w": np.zeros(3, dtype=np.float32)}
    assert arrays_digest(a) == arrays_digest({"w": np.zeros(3, dtype=np.float32)})


def test_a_trigger_planted_in_the_store_is_refused(tmp_path: Path) -> None:
    """Found in review: a trigger fires inside fedsafe's own transaction and zeroes every charge."""
    cfg = _cfg(tmp_path)
    train_round(cfg, _site(cfg), _state(cfg), _ctx(1))
    with sqlite3.connect(_store(cfg)) as db:
        db.execute(
            "CREATE TRIGGER zero_cost AFTER INSERT ON budget_charges "
            "BEGIN UPDATE budget_charges SET steps = 0 WHERE id = NEW.id; END"
        )
    with pytest.raises(StoreIntegrityError, match="trigger 'zero_cost'"):
        train_round(cfg, _site(cfg), _state(cfg), _ctx(2))
    with BudgetStore.open(_store(cfg)) as store:
        assert [c.charge.steps for c in store.charges("heart_disease/cleveland")] == [8]


def test_non_dp_evaluations_are_limited_per_data_set(tmp_path: Path) -> None:
    """Found in review: cheap rounds (noise 100, one step) bought unlimited crafted evaluations."""
    cfg = _cfg(tmp_path)
    policy = ReleasePolicy(evaluation="exact", max_evaluations=2)
    for run in ("r1", "r2", "r3"):
        train_round(cfg, _site(cfg, run_id=run), _state(cfg), _ctx(run_id=run))
    site = dataclasses.replace(_site(cfg), release=policy)
    evaluate_round(cfg, site, _state(cfg), _ctx(run_id="r1"))
    evaluate_round(cfg, site, _state(cfg), _ctx(run_id="r2"))
    with pytest.raises(FedsafeError, match="max_evaluations"):
        evaluate_round(cfg, site, _state(cfg), _ctx(run_id="r3"))
    dp_site = dataclasses.replace(site, release=ReleasePolicy(evaluation="dp", max_evaluations=2))
    evaluate_round(cfg, dp_site, _state(cfg), _ctx(run_id="r3"))  # charged, so not limited


def test_a_batch_size_that_would_reveal_the_row_count_is_refused(tmp_path: Path) -> None:
    """Found in review: batch_size=1 makes 1 / sample_rate the exact training-row count."""
    cfg = from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "training": {"batch_size": 1, "rounds": 2},
            "security": {"sealed_updates": False},
        },
    )
    site = dataclasses.replace(_site(cfg), release=ReleasePolicy(evaluation="rounded"))
    with pytest.raises(FedsafeError, match="reveal this site's row count"):
        train_round(cfg, site, _state(cfg), _ctx())


def test_a_malformed_model_is_refused_before_anything_is_charged(tmp_path: Path) -> None:
    """Found in review: wrong-shaped arrays used to reserve (and burn) the round's budget."""
    cfg = _cfg(tmp_path)
    bad = {k: torch.zeros(3) for k in _state(cfg)}
    with pytest.raises(RuntimeError):
        train_round(cfg, _site(cfg), bad, _ctx())
    assert (
        not _store(cfg).exists()
        or BudgetStore.open(_store(cfg)).history("heart_disease/cleveland") == []
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a site without CUDA")
def test_a_device_the_site_lacks_is_refused_before_anything_is_charged(tmp_path: Path) -> None:
    """A coordinator that asks a CPU-only site for CUDA gets a refusal naming the setting, and
    the site's budget keeps every epsilon it had."""
    cfg = dataclasses.replace(
        _cfg(tmp_path), training=dataclasses.replace(_cfg(tmp_path).training, device="cuda")
    )
    with pytest.raises(FedsafeError, match="training.device"):
        train_round(cfg, _site(cfg), _state(cfg), _ctx())
    assert (
        not _store(cfg).exists()
        or BudgetStore.open(_store(cfg)).history("heart_disease/cleveland") == []
    )


_RACE = """
import json, sys
from pathlib import Path
from fedsafe.client.local_round import RoundContext, train_round
from fedsafe.client.site import simulated_site
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.data import dataset_info
from fedsafe.common.models import build_model
cfg = from_dict(ExperimentConfig, {"runs_dir": sys.argv[1], "training": {"rounds": 3},
                "security": {"sealed_updates": False}})
info = dataset_info(cfg.dataset.name)
model = build_model(cfg.model.name, n_features=info.n_features, n_classes=2,
                    hidden=cfg.model.hidden, seed=0)
out = train_round(cfg, simulated_site(cfg, 0, "run-1"), dict(model.state_dict()),
                  RoundContext("run-1", 1, "cardiology-research"))
print(json.dumps({k: v.numpy().tolist() for k, v in out.state.items()}))
"""


def test_two_processes_on_one_store_release_one_update(tmp_path: Path) -> None:
    """Found in review: two processes both took a 'reserved' round for a crash replay."""
    import json
    import subprocess
    import sys

    cfg = _cfg(tmp_path)
    _site(cfg)  # keys exist before both start
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    assert outputs[0] == outputs[1]  # the second re-sent the first's release, no second training
    with BudgetStore.open(_store(cfg)) as store:
        assert [c.status for c in store.charges("heart_disease/cleveland")] == ["completed"]


def test_replacing_a_store_that_never_held_a_charge_loses_nothing_and_is_accepted(
    tmp_path: Path,
) -> None:
    """`site start` checks (creates) the store; a store with no charge may be recreated."""
    cfg = _cfg(tmp_path)
    site = _site(cfg)
    BudgetStore.open(site.budget_store, anchor=site.anchor).close()  # checked, never charged
    site.budget_store.unlink()
    train_round(cfg, site, _state(cfg), _ctx())  # a fresh store: nothing was spent before
    for suffix in ("", "-wal", "-shm"):
        Path(f"{site.budget_store}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreIntegrityError, match="not the store this site signed for"):
        train_round(cfg, site, _state(cfg), _ctx(2))  # but one charge makes it strict
