"""The run folder's numbers: known answers for the held-out means, strict JSON, resume, naming.

Every figure is checked against arithmetic done here by hand, not against the recorder's own
helpers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.server.recorder import RunRecorder


def _cfg(**strategy: object) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {"strategy": strategy, "training": {"rounds": 2}})


def _reply(site: str, metrics: dict[str, float], randomness: str = "os-csprng") -> RecordDict:
    payload = json.dumps({"release": "off", "randomness": randomness})
    return RecordDict(
        {
            keys.SITE: ConfigRecord({keys.SITE_NAME: site}),
            keys.METRICS: MetricRecord(metrics),
            keys.ATTESTATION: ConfigRecord({"payload": payload}),
        }
    )


def _train(eps: float = 1.0, n: float = 100.0) -> dict[str, float]:
    return {
        keys.NUM_EXAMPLES: n,
        keys.STEPS: 8.0,
        keys.EPSILON: eps,
        keys.DELTA: 1e-5,
        keys.NOISE_MULTIPLIER: 1.2,
        keys.SAMPLE_RATE: 0.1,
    }


def _eval(n: float, acc: float, loss: float = 0.5) -> dict[str, float]:
    return {
        keys.NUM_EXAMPLES: n,
        keys.LOSS: loss,
        keys.ACCURACY: acc,
        keys.BALANCED_ACCURACY: acc,
        keys.AUROC: 0.8,
    }


def _strict(path: Path) -> object:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-strict JSON token {token} in {path.name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_held_out_means_weigh_sites_by_count_under_the_share_cap(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path, _cfg(max_weight_share=0.5))
    rec.site_evaluated(1, 1, _reply("a", _eval(30, 0.9)))
    rec.site_evaluated(1, 2, _reply("b", _eval(30, 0.6)))
    rec.site_evaluated(1, 3, _reply("c", _eval(40, 0.3)))
    # no site over half of 100: plain weighted mean (27 + 18 + 12) / 100
    assert rec.global_metrics()[keys.ACCURACY] == pytest.approx(0.57)

    rec.site_evaluated(1, 3, _reply("c", _eval(400, 0.3)))
    # c is capped at half the total: 400 -> 60 (c = 0.5 * (c + 60)), so (27 + 18 + 18) / 120
    assert rec.global_metrics()[keys.ACCURACY] == pytest.approx(63 / 120)


def test_a_site_that_withholds_its_count_makes_the_mean_unweighted(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path, _cfg())
    rec.site_evaluated(1, 1, _reply("a", _eval(1000, 0.9)))
    rec.site_evaluated(1, 2, _reply("b", {**_eval(10, 0.5), keys.NUM_EXAMPLES: math.nan}))
    assert rec.global_metrics()[keys.ACCURACY] == pytest.approx(0.7)


def test_metrics_lines_are_on_disk_at_once_and_the_summary_is_strict_json(
    tmp_path: Path,
) -> None:
    rec = RunRecorder(tmp_path, _cfg())
    rec.round_started(1)
    rec.site_trained(1, 1, _reply("a", _train()), update_norm=2.5)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()  # before any finish
    assert json.loads(lines[0])["update_norm"] == 2.5 and json.loads(lines[0])["site"] == "a"

    rec.site_evaluated(1, 1, _reply("a", {**_eval(50, 0.8), keys.AUROC: math.nan}))
    rec.round_finished(1)
    summary = rec.finish(model_path=tmp_path / "model.safetensors", model_sha256="00" * 32)

    written = _strict(tmp_path / "summary.json")
    assert isinstance(written, dict) and written["sites"]["a"]["auroc"] is None
    assert summary["sites"]["a"]["steps"] == 8 and written["rounds_completed"] == 1
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda t: pytest.fail(f"non-strict {t}"))


def test_a_resumed_recorder_summarises_every_round(tmp_path: Path) -> None:
    first = RunRecorder(tmp_path, _cfg())
    first.round_started(1)
    first.site_trained(1, 1, _reply("a", _train(eps=0.8)))
    first.round_finished(1)
    state = json.loads(json.dumps(first.state()))  # what a checkpoint keeps: plain JSON

    resumed = RunRecorder(tmp_path, _cfg())
    resumed.restore(state)
    resumed.round_started(2)
    resumed.site_trained(2, 9, _reply("a", _train(eps=1.3)))  # another node id after restart
    resumed.round_finished(2)
    summary = resumed.finish(model_path=tmp_path / "m", model_sha256="00" * 32)

    site = summary["sites"]["a"]
    assert site["rounds_trained"] == [1, 2] and site["steps"] == 16 and site["epsilon"] == 1.3
    assert summary["rounds_completed"] == 2


def test_a_refusal_from_an_unnamed_node_is_filed_under_the_site_it_names(
    tmp_path: Path,
) -> None:
    rec = RunRecorder(tmp_path, _cfg())
    rec.round_started(1)
    rec.site_failed(1, 42, 4100, "site hungary: privacy budget exhausted")
    rec.site_failed(1, 43, 1, "connection reset")
    summary = rec.finish(model_path=tmp_path / "m", model_sha256="00" * 32)
    assert summary["sites"]["hungary"]["refusals"][0]["code"] == 4100
    assert summary["sites"]["node-43"]["refusals"][0]["reason"] == "connection reset"


def test_seeded_noise_marks_a_site_not_private(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path, _cfg())
    rec.round_started(1)
    rec.site_trained(1, 1, _reply("a", _train()))
    rec.site_trained(1, 2, _reply("b", _train(), randomness="seeded-test-only"))
    summary = rec.finish(model_path=tmp_path / "m", model_sha256="00" * 32)
    assert summary["sites"]["a"]["private"] is True
    assert summary["sites"]["b"]["private"] is False
    assert summary["sites"]["b"]["randomness"] == "seeded-test-only"
