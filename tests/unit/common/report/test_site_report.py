"""`fedsafe site report`: a site's own report from its store, across runs, numbers as stored."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import pytest

from fedsafe.client.budget import BudgetStore, RoundRefusedError
from fedsafe.client.policy import SitePolicy
from fedsafe.client.site_report import add_site_report_parser, build_site_report
from fedsafe.common.privacy.accountants import Charge, epsilon_for

ROUND = Charge(1.5, 0.05, 20)
CAP = epsilon_for([ROUND] * 3, delta=1e-5)


def _cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="fedsafe site")
    add_site_report_parser(parser.add_subparsers(dest="site_command", required=True))
    args = parser.parse_args(["report", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Two runs on one dataset: run-1 trains two rounds, run-2 one, then is refused."""
    path = tmp_path / "site" / "budget.db"
    policy = SitePolicy(max_epsilon=CAP)
    with BudgetStore.open(path) as store:
        for run, rnd in (("run-1", 1), ("run-1", 2), ("run-2", 1)):
            res = store.reserve(
                dataset_id="cleveland",
                run_id=run,
                round=rnd,
                charge=ROUND,
                policy=policy,
                purpose="research",
            )
            store.complete(res, steps_taken=20)
        with pytest.raises(RoundRefusedError):
            store.reserve(
                dataset_id="cleveland",
                run_id="run-2",
                round=2,
                charge=ROUND,
                policy=policy,
                purpose="research",
            )
    return path


def test_numbers_equal_the_store(store_path: Path) -> None:
    report = build_site_report(store_path)

    with BudgetStore.open(store_path, create=False) as store:
        (summary,) = store.datasets()
        runs = store.runs("cleveland")
        refusals = store.refusals("cleveland")
    (ds,) = report["datasets"]
    assert ds["epsilon"] == summary.epsilon == epsilon_for([ROUND] * 3, delta=1e-5)
    assert (ds["rounds"], ds["steps"], ds["refusals"]) == (3, 60, 1)
    assert [(r["run_id"], r["rounds"], r["epsilon_after"]) for r in ds["runs"]] == [
        (r.run_id, r.rounds, r.epsilon_after) for r in runs
    ]
    assert [h["epsilon_after"] for h in ds["history"]] == [
        epsilon_for([ROUND] * n, delta=1e-5) for n in (1, 2, 3)
    ]
    assert [(r["run_id"], r["round"], r["reason"]) for r in ds["refusal_list"]] == [
        (r.run_id, r.round, r.reason) for r in refusals
    ]
    assert ds["cap"] == refusals[-1].cap  # no --cap: the cap the site last enforced
    assert ds["cap_fraction"] == pytest.approx(summary.epsilon / CAP)


def test_cli_writes_html_and_json(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "site.html"

    code, stdout, err = _cli(
        "--store", str(store_path), "--out", str(out), "--cap", "10", "--site", "cleveland"
    )

    assert (code, err) == (0, "")
    assert str(out) in stdout
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["datasets"][0]["cap"] == 10.0
    html = out.read_text(encoding="utf-8")
    assert "Site privacy budget report: cleveland" in html
    assert "run-1" in html and "run-2" in html and "budget" in html
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", html)
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_default_output_sits_by_the_store(store_path: Path) -> None:
    code, _, _ = _cli("--store", str(store_path))

    assert code == 0
    assert (store_path.parent / "site-report.html").is_file()
    assert (store_path.parent / "site-report.json").is_file()


def test_near_cap_is_flagged(store_path: Path) -> None:
    report = build_site_report(store_path)
    findings = [f for f in report["findings"] if "NOT VERIFIED" not in f["text"]]

    assert findings[0]["level"] == "bad"  # the cap is reached: 3 of 3 rounds
    assert "reached the cap" in findings[0]["text"]


def test_missing_store_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    code, _, err = _cli("--store", str(tmp_path / "nope.db"))

    assert code == 2
    assert "no budget store" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_cap_is_rejected(store_path: Path) -> None:
    with pytest.raises(ValueError, match="cap"):
        build_site_report(store_path, cap=-1.0)


def test_report_with_keys_refuses_an_edited_store_and_says_unverified_without(
    tmp_path: Path,
) -> None:
    """Whoever can write the store file cannot make the report show a smaller spend."""
    import sqlite3

    from fedsafe.client.budget import StoreAnchor
    from fedsafe.common.crypto.pki import init_site_keys

    keys_dir = tmp_path / "keys"
    init_site_keys(keys_dir, "cleveland")
    path = tmp_path / "b.db"
    with BudgetStore.open(path, anchor=StoreAnchor.from_keys_dir(keys_dir)) as store:
        for rnd in (1, 2):
            store.reserve(
                dataset_id="d",
                run_id="r",
                round=rnd,
                charge=ROUND,
                policy=SitePolicy(max_epsilon=50.0),
                purpose=None,
            )
    unverified = build_site_report(path)
    assert unverified["verified"] is False
    assert "NOT VERIFIED" in unverified["findings"][0]["text"]
    verified = build_site_report(path, keys_dir=keys_dir)
    assert verified["verified"] is True
    assert not any("NOT VERIFIED" in f["text"] for f in verified["findings"])
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM budget_charges WHERE id = 2")
    code, _, err = _cli("--store", str(path), "--keys", str(keys_dir))
    assert code == 2 and "changed outside fedsafe" in err
