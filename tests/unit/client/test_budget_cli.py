"""`fedsafe site budget`: JSON and table output from a real store; a missing store is an error."""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
from pathlib import Path

import pytest

from fedsafe.client.budget import BudgetStore, BudgetStoreError, RoundRefusedError
from fedsafe.client.budget_cli import add_budget_parser, budget_report
from fedsafe.client.policy import SitePolicy
from fedsafe.common.privacy.accountants import Charge, epsilon_for

ROUND = Charge(1.5, 0.05, 20)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsafe site")
    add_budget_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(*argv: str) -> tuple[int, str, str]:
    args = _parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "budget.db"
    policy = SitePolicy(max_epsilon=epsilon_for([ROUND] * 3, delta=1e-5))
    with BudgetStore.open(path) as store:
        for rnd in (1, 2):
            res = store.reserve(
                dataset_id="cleveland",
                run_id="run-1",
                round=rnd,
                charge=ROUND,
                policy=policy,
                purpose=None,
            )
            store.complete(res, steps_taken=20)
        store.reserve(
            dataset_id="cleveland",
            run_id="run-2",
            round=1,
            charge=ROUND,
            policy=policy,
            purpose=None,
        )
        with pytest.raises(RoundRefusedError):
            for rnd in range(2, 50):
                store.reserve(
                    dataset_id="cleveland",
                    run_id="run-2",
                    round=rnd,
                    charge=ROUND,
                    policy=policy,
                    purpose=None,
                )
        store.reserve(
            dataset_id="hungary", run_id="run-1", round=1, charge=ROUND, policy=policy, purpose=None
        )
    return path


def test_json_output(store_path: Path) -> None:
    code, out, err = _run("budget", "--store", str(store_path), "--json")

    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report == budget_report(store_path)
    assert report["store"] == str(store_path)
    cleveland, hungary = report["datasets"]
    with BudgetStore.open(store_path) as store:
        history = store.history("cleveland")
    assert cleveland["epsilon"] == epsilon_for(history, delta=1e-5)
    assert (cleveland["delta"], cleveland["accountant"]) == (1e-5, "rdp")
    run1, run2 = cleveland["runs"]
    assert run1 == {
        "run_id": "run-1",
        "rounds": 2,
        "steps": 40,
        "reserved": 0,
        "refusals": 0,
        "epsilon_after": epsilon_for([ROUND] * 2, delta=1e-5),
    }
    assert (
        run2["run_id"] == "run-2" and run2["refusals"] == 1 and run2["reserved"] == run2["rounds"]
    )
    assert run2["epsilon_after"] == cleveland["epsilon"]
    assert hungary["dataset_id"] == "hungary" and hungary["rounds"] == 1


def test_table_output(store_path: Path) -> None:
    code, out, _ = _run("budget", "--store", str(store_path))

    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"budget store: {store_path}"
    assert lines[1].split("  ")[0] == "dataset"
    for header in ("run", "rounds", "steps", "epsilon after run", "refusals"):
        assert header in lines[1]
    rows = [line.split() for line in lines[3:6]]
    eps_two = f"{epsilon_for([ROUND] * 2, delta=1e-5):.4f}"
    assert rows[0] == ["cleveland", "run-1", "2", "40", eps_two, "0"]
    assert rows[1][:2] == ["cleveland", "run-2"] and rows[1][2].endswith("*")
    assert rows[1][-1] == "1"
    assert rows[2][:2] == ["hungary", "run-1"]
    assert "crash mid-round" in out


def test_missing_store_is_a_clear_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "budget.db"

    code, out, err = _run("budget", "--store", str(path))

    assert code == 2 and out == ""
    assert str(path) in err and "no budget store" in err
    assert not path.exists()
    with pytest.raises(BudgetStoreError, match="no budget store"):
        budget_report(path)


def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table notes (text)")

    code, _, err = _run("budget", "--store", str(path))

    assert code == 2 and "not a fedsafe budget store" in err


def test_empty_store_says_so(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    BudgetStore.open(path).close()

    code, out, _ = _run("budget", "--store", str(path))

    assert code == 0 and "(no charges or refusals yet)" in out
    assert json.loads(_run("budget", "--store", str(path), "--json")[1])["datasets"] == []


def test_acknowledge_cli_records_the_decision_and_the_site_trains_again(tmp_path: Path) -> None:
    """A store replaced behind the site's back: refused, then acknowledged on the record."""
    from fedsafe.client.budget import StoreAnchor, StoreIntegrityError
    from fedsafe.client.budget_cli import add_acknowledge_parser
    from fedsafe.common.crypto.pki import init_site_keys, load_signing_private_key

    keys_dir = tmp_path / "keys"
    init_site_keys(keys_dir, "cleveland")
    anchor = StoreAnchor.in_keys_dir(keys_dir, load_signing_private_key(keys_dir / "signing.key"))
    policy = SitePolicy(max_epsilon=50.0)
    with BudgetStore.open(tmp_path / "a.db", anchor=anchor) as store:
        store.reserve(
            dataset_id="d", run_id="r", round=1, charge=ROUND, policy=policy, purpose=None
        )
    with pytest.raises(StoreIntegrityError):
        BudgetStore.open(tmp_path / "b.db", anchor=anchor)

    parser = argparse.ArgumentParser(prog="fedsafe site")
    add_acknowledge_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "acknowledge",
            "--store",
            str(tmp_path / "b.db"),
            "--keys",
            str(keys_dir),
            "--reason",
            "old disk failed; spend carried on paper",
        ]
    )
    out, err = io.StringIO(), io.StringIO()
    assert args.func(args, out=out, err=err) == 0, err.getvalue()

    assert '"previous_charges": 1' in out.getvalue()
    with BudgetStore.open(tmp_path / "b.db", anchor=anchor) as store:
        assert store.acknowledgements()[0].reason.startswith("old disk failed")
    report = budget_report(tmp_path / "b.db")
    assert report["acknowledgements"][0]["detail"]["previous_charges"] == 1


def test_budget_report_with_keys_refuses_an_edited_store_and_says_unverified_without(
    tmp_path: Path,
) -> None:
    """Found in review: the report showed a tampered store's smaller spend without a word."""
    from fedsafe.client.budget import StoreAnchor
    from fedsafe.common.crypto.pki import init_site_keys, load_signing_private_key

    keys_dir = tmp_path / "keys"
    init_site_keys(keys_dir, "cleveland")
    anchor = StoreAnchor.in_keys_dir(keys_dir, load_signing_private_key(keys_dir / "signing.key"))
    policy = SitePolicy(max_epsilon=50.0)
    path = tmp_path / "b.db"
    with BudgetStore.open(path, anchor=anchor) as store:
        for rnd in (1, 2):
            store.reserve(
                dataset_id="d", run_id="r", round=rnd, charge=ROUND, policy=policy, purpose=None
            )
    code, out, _ = _run("budget", "--store", str(path))
    assert code == 0 and "NOT VERIFIED" in out
    code, out, _ = _run("budget", "--store", str(path), "--keys", str(keys_dir))
    assert code == 0 and "NOT VERIFIED" not in out
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM budget_charges WHERE id = 2")
    code, _, err = _run("budget", "--store", str(path), "--keys", str(keys_dir))
    assert code == 2 and "changed outside fedsafe" in err
