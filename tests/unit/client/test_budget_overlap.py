"""A data set's records are its identity too: shared records never start a fresh budget.

Tested as whoever can write the site's data file and its dataset_id: the same records under a
new name with one row added or dropped are refused; the record table is covered by the signed
head (deleting it is detected); a version 2 store is migrated under the head.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedsafe.client.budget import BudgetStore, PolicyRefusedError, StoreAnchor, StoreIntegrityError
from fedsafe.client.budget.acknowledge import acknowledge_store
from fedsafe.client.budget.releases import record_nonprivate
from fedsafe.client.budget.schema import SCHEMA_VERSION
from fedsafe.client.policy import SitePolicy
from fedsafe.common.crypto.pki import init_site_keys
from fedsafe.common.privacy.accountants import Charge

ROUND = Charge(1.5, 0.05, 20)
POLICY = SitePolicy(max_epsilon=50.0)
RECORDS = np.arange(1_000, 1_300, dtype=np.uint64) * np.uint64(2654435761)


def _anchor(tmp_path: Path) -> StoreAnchor:
    keys = tmp_path / "keys"
    if not (keys / "signing.key").exists():
        init_site_keys(keys, "clinic")
    return StoreAnchor.from_keys_dir(keys)


def _reserve(store: BudgetStore, dataset_id: str, records: np.ndarray, rnd: int = 1) -> None:
    store.reserve(
        dataset_id=dataset_id,
        run_id="run-1",
        round=rnd,
        charge=ROUND,
        policy=POLICY,
        purpose=None,
        fingerprint=f"{dataset_id:0<64}"[:64],
        records=records,
    )


@pytest.mark.parametrize(
    "other",
    [
        np.concatenate([RECORDS, [np.uint64(7)]]),  # one row added
        RECORDS[1:],  # one row dropped
        RECORDS[::10],  # a tenth of the records, re-cut
    ],
    ids=["one-added", "one-dropped", "a-subset"],
)
def test_shared_records_under_a_new_name_are_refused_and_recorded(
    tmp_path: Path, other: np.ndarray
) -> None:
    with BudgetStore.open(tmp_path / "b.db", anchor=_anchor(tmp_path)) as store:
        _reserve(store, "cardio-2026", RECORDS)
        shared = len(np.intersect1d(other, RECORDS))
        with pytest.raises(PolicyRefusedError, match=f"{shared} of these .* 'cardio-2026'"):
            _reserve(store, "cardio-renamed", other)
        (refusal,) = store.refusals("cardio-renamed")
        assert refusal.reason == "data" and store.history("cardio-renamed") == []


def test_disjoint_records_are_a_new_data_set(tmp_path: Path) -> None:
    with BudgetStore.open(tmp_path / "b.db", anchor=_anchor(tmp_path)) as store:
        _reserve(store, "a", RECORDS)
        _reserve(store, "b", RECORDS + np.uint64(1))
        assert len(store.history("b")) == 1


def test_a_nonprivate_round_on_shared_records_is_refused(tmp_path: Path) -> None:
    with BudgetStore.open(tmp_path / "b.db", anchor=_anchor(tmp_path)) as store:
        _reserve(store, "a", RECORDS)
        with pytest.raises(PolicyRefusedError, match="already accounted in data set 'a'"):
            record_nonprivate(
                store,
                dataset_id="a-baseline",
                run_id="run-2",
                round=1,
                policy=POLICY,
                fingerprint=None,
                purpose=None,
                records=RECORDS[:50],
            )
        assert store.refusals("a-baseline")[0].reason == "data"


def test_deleting_the_record_table_rows_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with BudgetStore.open(path, anchor=_anchor(tmp_path)) as store:
        _reserve(store, "a", RECORDS)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM budget_dataset_records")
    with pytest.raises(StoreIntegrityError, match="changed outside fedsafe"):
        BudgetStore.open(path, anchor=_anchor(tmp_path))


def test_a_version_2_store_is_migrated_under_the_signed_head(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    anchor = _anchor(tmp_path)
    with BudgetStore.open(path, anchor=anchor) as store:
        _reserve(store, "a", RECORDS)
    # As version 2 wrote it: no records table, version "2", and a head signed for that state.
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE budget_dataset_records")
        db.execute("UPDATE budget_meta SET value = '2' WHERE key = 'schema_version'")
    acknowledge_store(path, anchor, reason="test: stand-in for a version 2 head")
    with BudgetStore.open(path, anchor=anchor) as store:
        _reserve(store, "a", RECORDS, rnd=2)  # a charged data set gains its records now
        with pytest.raises(PolicyRefusedError, match="already accounted in data set 'a'"):
            _reserve(store, "b", RECORDS[:3])
    with sqlite3.connect(path) as db:
        (version,) = db.execute(
            "SELECT value FROM budget_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert version == str(SCHEMA_VERSION)
    BudgetStore.open(path, anchor=anchor).close()  # the migrated state is the signed one


def test_an_acknowledged_change_keeps_the_old_records_spent(tmp_path: Path) -> None:
    """Found in review: acknowledging new rows replaced the record set, so the old rows could
    then start afresh under a new name."""
    from fedsafe.client.budget.acknowledge import acknowledge_data

    with BudgetStore.open(tmp_path / "b.db", anchor=_anchor(tmp_path)) as store:
        _reserve(store, "a", RECORDS)
        acknowledge_data(
            store,
            dataset_id="a",
            fingerprint="f" * 64,
            reason="new extract, ticket 7",
            records=RECORDS + np.uint64(1),
        )
        with pytest.raises(PolicyRefusedError, match="already accounted in data set 'a'"):
            _reserve(store, "old-rows-renamed", RECORDS[1:])


def test_after_migration_a_new_data_set_waits_for_the_old_ones_records(tmp_path: Path) -> None:
    """Found in review: a data set charged under version 2 has no record set, so its rows plus
    one under a new name would pass; the site first records the old data set's rows."""
    from fedsafe.client.budget.acknowledge import acknowledge_data

    path = tmp_path / "b.db"
    anchor = _anchor(tmp_path)
    with BudgetStore.open(path, anchor=anchor) as store:
        _reserve(store, "a", RECORDS)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE budget_dataset_records")
        db.execute("UPDATE budget_meta SET value = '2' WHERE key = 'schema_version'")
    acknowledge_store(path, anchor, reason="test: stand-in for a version 2 head")
    with BudgetStore.open(path, anchor=anchor) as store:
        plus_one = np.concatenate([RECORDS, [np.uint64(7)]])
        with pytest.raises(PolicyRefusedError, match="'a' was accounted before this store kept"):
            _reserve(store, "b", plus_one)
        acknowledge_data(
            store, dataset_id="a", fingerprint=f"{'a':0<64}", reason="record", records=RECORDS
        )
        with pytest.raises(PolicyRefusedError, match="already accounted in data set 'a'"):
            _reserve(store, "b", plus_one)
        _reserve(store, "c", RECORDS + np.uint64(99))  # disjoint rows: a new data set
