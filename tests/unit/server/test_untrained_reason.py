"""Why a run in which no site trained failed: each site's reason, the stop; None once one did."""

from __future__ import annotations

from pathlib import Path

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.server.recorder import RunRecorder


def _recorder(tmp_path: Path) -> RunRecorder:
    return RunRecorder(tmp_path, from_dict(ExperimentConfig, {"training": {"rounds": 2}}))


def test_names_each_site_and_the_stop(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    rec.site_excluded(1, "hungary", "purpose 'marketing' not covered")
    rec.site_failed(1, 7, 409, "site cleveland: budget cap 3 would be exceeded")
    rec.stopped(1, "0 site(s) trained, fewer than min_sites=2")
    why = rec.untrained_reason()
    rec.close()
    assert why == (
        "all 2 site(s) refused or excluded: cleveland: site cleveland: budget cap 3 would be "
        "exceeded; hungary: purpose 'marketing' not covered; training stopped at round 1: "
        "0 site(s) trained, fewer than min_sites=2"
    )


def test_many_sites_are_counted_not_listed(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    for i in range(5):
        rec.site_excluded(1, f"site{i}", "no consent")
    why = rec.untrained_reason()
    rec.close()
    assert why is not None and why.startswith("all 5 site(s)") and why.endswith("and 2 more")


def test_silent_sites_and_a_run_where_one_trained(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    assert rec.untrained_reason() == "no site answered the roll call or was sent work"
    rec.sites["cleveland"] = rec._site("cleveland")
    rec.sites["cleveland"].trained_rounds.append(1)
    assert rec.untrained_reason() is None
    rec.close()
    rec.close()  # idempotent: a failed run closes, and nothing closes twice by mistake
