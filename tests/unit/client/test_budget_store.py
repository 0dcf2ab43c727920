"""BudgetStore: reserve, complete, refusals, replays and summaries against known compositions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fedsafe.client.budget import (
    BudgetStore,
    BudgetStoreError,
    PolicyRefusedError,
    Reservation,
    RoundRefusedError,
)
from fedsafe.client.policy import SitePolicy
from fedsafe.common.errors import BudgetExceededError, PrivacyError
from fedsafe.common.privacy.accountants import Charge, epsilon_for

ROUND = Charge(noise_multiplier=1.5, sample_rate=0.05, steps=20)
POLICY = SitePolicy(max_epsilon=3.0, delta=1e-5)
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BudgetStore]:
    opened = BudgetStore.open(tmp_path / "site" / "budget.db")
    yield opened
    opened.close()


def reserve(store: BudgetStore, round: int, *, run: str = "run-1", **kw: object) -> Reservation:
    args: dict[str, object] = dict(
        dataset_id="cleveland", run_id=run, round=round, charge=ROUND, policy=POLICY, purpose=None
    )
    args.update(kw)
    return store.reserve(**args)  # type: ignore[arg-type]


def test_open_creates_parent_dir_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "budget.db"
    BudgetStore.open(path).close()

    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        mode = conn.execute("pragma journal_mode").fetchone()[0]
    assert {"budget_charges", "budget_refusals"} <= tables
    assert mode == "wal"


def test_reserve_charges_planned_steps_before_training(store: BudgetStore) -> None:
    res = reserve(store, 1, at_time=T0)

    assert (res.status, res.replayed, res.charge, res.planned_steps) == (
        "reserved",
        False,
        ROUND,
        20,
    )
    assert store.history("cleveland") == [ROUND]
    assert res.epsilon_after == epsilon_for([ROUND], delta=1e-5)
    assert store.charges("cleveland")[0].time == "2025-01-02T03:04:05.000000+00:00"


def test_spent_composes_whole_history_across_runs_not_a_sum(store: BudgetStore) -> None:
    for rnd in (1, 2):
        store.complete(reserve(store, rnd, run="run-1"), steps_taken=20)
    store.complete(reserve(store, 1, run="run-2"), steps_taken=20)

    spent = store.spent("cleveland", delta=1e-5, accountant="rdp")
    one = epsilon_for([ROUND], delta=1e-5)
    assert spent == epsilon_for([ROUND] * 3, delta=1e-5)
    assert spent < 3 * one  # composition is tighter than summing per-round epsilons
    assert store.spent("hungary", delta=1e-5, accountant="rdp") == 0.0


def test_complete_with_fewer_steps_lowers_the_charge(store: BudgetStore) -> None:
    res = reserve(store, 1)

    done = store.complete(res, steps_taken=12, at_time=T0)

    assert done.status == "completed" and done.charge.steps == 12 and done.planned_steps == 20
    assert store.history("cleveland") == [Charge(1.5, 0.05, 12)]
    assert done.epsilon_after == epsilon_for([Charge(1.5, 0.05, 12)], delta=1e-5)
    assert done.epsilon_after < res.epsilon_after


def test_complete_twice_same_steps_is_a_no_op_different_steps_an_error(
    store: BudgetStore,
) -> None:
    res = reserve(store, 1)
    first = store.complete(res, steps_taken=15)

    assert store.complete(res, steps_taken=15) == first
    with pytest.raises(BudgetStoreError, match="already completed with 15 steps"):
        store.complete(res, steps_taken=10)
    assert store.history("cleveland") == [Charge(1.5, 0.05, 15)]


def test_overrun_records_real_steps_then_raises(store: BudgetStore) -> None:
    res = reserve(store, 1)

    with pytest.raises(PrivacyError, match="ran 25 steps but reserved 20"):
        store.complete(res, steps_taken=25)

    assert store.history("cleveland") == [Charge(1.5, 0.05, 25)]  # never under-counted


def test_complete_checks_arguments(store: BudgetStore) -> None:
    res = reserve(store, 1)
    with pytest.raises(TypeError):
        store.complete(res, steps_taken=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.complete(res, steps_taken=-1)


def test_complete_unknown_reservation(store: BudgetStore, tmp_path: Path) -> None:
    res = reserve(store, 1)
    with BudgetStore.open(tmp_path / "other.db") as other, pytest.raises(BudgetStoreError):
        other.complete(res, steps_taken=1)


def test_replayed_round_is_not_charged_twice(store: BudgetStore) -> None:
    first = store.complete(reserve(store, 1), steps_taken=20)

    again = reserve(store, 1)

    assert again.replayed and again.id == first.id and again.status == "completed"
    assert again.charge == ROUND and again.epsilon_after == first.epsilon_after
    assert store.history("cleveland") == [ROUND]
    assert store.refusals() == []


@pytest.mark.parametrize(
    ("charge", "named"),
    [
        (Charge(0.35, 0.05, 20), "noise_multiplier reserved 1.5, asked 0.35"),
        (Charge(1.5, 0.1, 20), "sample_rate reserved 0.05, asked 0.1"),
        (Charge(1.5, 0.05, 40), "steps reserved 20, asked 40"),
    ],
)
def test_a_replay_with_other_parameters_is_refused_naming_them(
    store: BudgetStore, charge: Charge, named: str
) -> None:
    """A coordinator replaying a crashed round with lower noise gets a refusal, not a retrain."""
    reserve(store, 1)  # reserved, never completed: a crash mid-round

    with pytest.raises(PolicyRefusedError, match=named) as info:
        reserve(store, 1, charge=charge)

    assert info.value.reason == "replay"
    assert store.history("cleveland") == [ROUND]
    assert [r.reason for r in store.refusals("cleveland")] == ["replay"]


def test_budget_refusal_is_recorded_and_says_spend_cost_cap_and_fix(store: BudgetStore) -> None:
    rounds = 0
    with pytest.raises(BudgetExceededError) as info:
        while True:
            rounds += 1
            store.complete(reserve(store, rounds), steps_taken=20)

    err = info.value
    assert isinstance(err, RoundRefusedError) and not isinstance(err, PolicyRefusedError)
    history = store.history("cleveland")
    spent = epsilon_for(history, delta=1e-5)
    after = epsilon_for([*history, ROUND], delta=1e-5)
    assert spent <= 3.0 < after
    assert (err.reason, err.spent_epsilon, err.cap) == ("budget", spent, 3.0)
    assert err.round_epsilon_cost == pytest.approx(after - spent)
    message = str(err)
    assert f"spent epsilon {spent:.4g}" in message
    assert f"{after - spent:.4g} more" in message and "max_epsilon=3" in message
    assert "Fix:" in message
    (refusal,) = store.refusals("cleveland")
    assert (refusal.run_id, refusal.round, refusal.reason, refusal.cap) == (
        "run-1",
        rounds,
        "budget",
        3.0,
    )
    assert refusal.message == message
    assert len(history) == rounds - 1


def test_noise_below_site_minimum_is_refused(store: BudgetStore) -> None:
    with pytest.raises(PolicyRefusedError, match="min_noise_multiplier=0.5") as info:
        reserve(store, 1, charge=Charge(0.3, 0.05, 1))

    assert info.value.reason == "noise"
    assert store.history("cleveland") == []
    assert [r.reason for r in store.refusals()] == ["noise"]


def test_purpose_not_allowed_is_refused(store: BudgetStore) -> None:
    policy = SitePolicy(max_epsilon=3.0, allowed_purposes=("research",))
    with pytest.raises(PolicyRefusedError, match="purpose 'marketing' is not allowed") as info:
        reserve(store, 1, policy=policy, purpose="marketing")

    assert info.value.reason == "purpose"
    assert reserve(store, 1, policy=policy, purpose="research").status == "reserved"


def test_zero_noise_is_refused_as_infinite_epsilon(store: BudgetStore) -> None:
    policy = SitePolicy(max_epsilon=3.0, min_noise_multiplier=0.0)
    with pytest.raises(RoundRefusedError, match="reaching inf"):
        reserve(store, 1, charge=Charge(0.0, 0.05, 1), policy=policy)


def test_reserve_checks_arguments(store: BudgetStore) -> None:
    with pytest.raises(TypeError):
        reserve(store, 1, charge=(1.0, 0.1, 1))
    with pytest.raises(TypeError):
        reserve(store, True)
    with pytest.raises(ValueError):
        reserve(store, -1)
    with pytest.raises(ValueError):
        reserve(store, 1, run="")
    with pytest.raises(ValueError, match="timezone-aware"):
        reserve(store, 1, at_time=datetime(2025, 1, 1))


def test_summaries_per_run_and_dataset(store: BudgetStore) -> None:
    for rnd in (1, 2):
        store.complete(reserve(store, rnd, run="run-1"), steps_taken=20)
    reserve(store, 1, run="run-2")  # crashed: left reserved
    with pytest.raises(PolicyRefusedError):
        reserve(store, 2, run="run-2", charge=Charge(0.1, 0.05, 1))
    with pytest.raises(PolicyRefusedError):
        reserve(store, 1, run="run-3", charge=Charge(0.1, 0.05, 1))

    runs = store.runs("cleveland")

    assert [(r.run_id, r.rounds, r.steps, r.reserved, r.refusals) for r in runs] == [
        ("run-1", 2, 40, 0, 0),
        ("run-2", 1, 20, 1, 1),
        ("run-3", 0, 0, 0, 1),
    ]
    assert runs[0].epsilon_after == epsilon_for([ROUND] * 2, delta=1e-5)
    assert runs[1].epsilon_after == epsilon_for([ROUND] * 3, delta=1e-5)
    assert runs[2].epsilon_after == runs[1].epsilon_after
    (ds,) = store.datasets()
    assert (ds.dataset_id, ds.runs, ds.rounds, ds.steps, ds.reserved, ds.refusals) == (
        "cleveland",
        3,
        3,
        60,
        1,
        2,
    )
    assert ds.epsilon == runs[1].epsilon_after and (ds.delta, ds.accountant) == (1e-5, "rdp")


def test_datasets_are_kept_apart(store: BudgetStore) -> None:
    reserve(store, 1)
    reserve(store, 1, dataset_id="hungary")

    assert [d.dataset_id for d in store.datasets()] == ["cleveland", "hungary"]
    assert store.history("hungary") == [ROUND]


def test_open_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "budget.db"
    with pytest.raises(BudgetStoreError, match=str(path)):
        BudgetStore.open(path, create=False)
    assert not path.exists() and not path.parent.exists()


def test_concurrent_writers_cannot_both_pass_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    BudgetStore.open(path).close()
    cap = epsilon_for([ROUND] * 3, delta=1e-5)  # room for exactly three rounds
    policy = SitePolicy(max_epsilon=cap)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with BudgetStore.open(path) as own:
            try:
                own.reserve(
                    dataset_id="d",
                    run_id=f"r{i}",
                    round=1,
                    charge=ROUND,
                    policy=policy,
                    purpose=None,
                )
                result = "ok"
            except BudgetExceededError:
                result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 3
    with BudgetStore.open(path) as check:
        assert check.spent("d", delta=1e-5, accountant="rdp") <= cap
        assert len(check.refusals("d")) == 3


def test_a_settled_head_lost_to_a_power_cut_is_promoted_and_the_spend_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settled head is written without a folder fsync: after a power cut the pending head
    (fsynced before the commit) may be all that is on disk. The next open must promote it and
    count the charge, never refuse the store or lose the spend."""
    from fedsafe.client.budget import StoreAnchor
    from fedsafe.common import crypto

    anchor = StoreAnchor(tmp_path / "keys" / "budget-head.json", crypto.generate_signing_key()[0])
    path = tmp_path / "site" / "budget.db"
    with BudgetStore.open(path, anchor=anchor) as opened:
        reserve(opened, 1)
    monkeypatch.setattr(StoreAnchor, "settle", lambda self, pending: None)  # the write is lost
    with BudgetStore.open(path, anchor=anchor) as opened:
        reserve(opened, 2)
    left = anchor.read()
    assert left is not None and left.pending is not None and left.charges == 2
    monkeypatch.undo()

    with BudgetStore.open(path, anchor=anchor) as reopened:
        promoted = anchor.read()
        assert promoted is not None and promoted.pending is None
        assert promoted.digest == left.pending and promoted.charges == 2
        assert reopened.history("cleveland") == [ROUND, ROUND]
        reserve(reopened, 3)
        assert reopened.history("cleveland") == [ROUND, ROUND, ROUND]
