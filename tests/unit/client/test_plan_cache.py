"""The site's signed cache of its noise searches, tested as whoever can write the site's files.

The cache saves the 5-6 accountant passes of a search in every process that serves the site;
it must never let a planted or edited answer lower the noise the site trains with.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fedsafe.client import plan_cache
from fedsafe.client.plan_cache import FILE_NAME, PlanCache, site_plan
from fedsafe.common import crypto
from fedsafe.common.config import PrivacyConfig, TrainingConfig
from fedsafe.common.privacy import planner
from fedsafe.common.privacy.planner import noise_question, plan_site

PRIVACY = PrivacyConfig(target_epsilon=3.0)
TRAINING = TrainingConfig(rounds=4)
N_TRAIN = 240


@pytest.fixture(autouse=True)
def fresh_process() -> None:
    """Each test starts as a process that has searched nothing yet."""
    plan_cache._known.clear()  # noqa: SLF001
    plan_site.cache_clear()


def _key() -> bytes:
    return crypto.generate_signing_key()[0]


def _plan(folder: Path, key: bytes, n_train: int = N_TRAIN) -> planner.SitePlan:
    return site_plan(PRIVACY, TRAINING, n_train=n_train, rounds=None, cache=PlanCache(folder, key))


def _no_search(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the searches a call runs (a cache hit runs none)."""
    calls: list[int] = []
    real = planner.noise_for_target

    def counted(**kwargs: object) -> tuple[float, float]:
        calls.append(1)
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(planner, "noise_for_target", counted)
    return calls


def _searched() -> planner.SitePlan:
    plan_site.cache_clear()
    return plan_site(PRIVACY, TRAINING, n_train=N_TRAIN)


def test_another_process_takes_the_signed_answer_without_searching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key()
    first = _plan(tmp_path, key)
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    plan_cache._known.clear()  # noqa: SLF001 - a second worker process
    plan_site.cache_clear()
    calls = _no_search(monkeypatch)
    again = _plan(tmp_path, key)
    assert calls == [] and again == first


def test_the_cached_plan_is_the_plan_the_search_gives(tmp_path: Path) -> None:
    key = _key()
    _plan(tmp_path, key)
    plan_cache._known.clear()  # noqa: SLF001
    assert _plan(tmp_path, key) == _searched()


def test_an_edited_noise_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = _key()
    honest = _plan(tmp_path, key)
    path = tmp_path / FILE_NAME
    record = json.loads(path.read_text())
    for entry in record["entries"].values():
        payload = json.loads(entry["payload"])
        payload["noise_multiplier"] = 0.3  # far less noise than the target needs
        entry["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    path.write_text(json.dumps(record))
    plan_cache._known.clear()  # noqa: SLF001
    plan_site.cache_clear()
    calls = _no_search(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="fedsafe.client.plan_cache"):
        plan = _plan(tmp_path, key)
    assert calls == [1], "the edited answer must be searched again"
    assert plan.noise_multiplier == honest.noise_multiplier
    assert "does not verify" in caplog.text and str(path) in caplog.text


def test_an_answer_signed_with_another_key_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, forger = _key(), _key()
    question = noise_question(PRIVACY, TRAINING, n_train=N_TRAIN)
    assert question is not None
    PlanCache(tmp_path, forger).put(question, (0.3, 1.0))  # planted with the forger's own key
    calls = _no_search(monkeypatch)
    plan = _plan(tmp_path, key)
    assert calls == [1] and plan.noise_multiplier == _searched().noise_multiplier


def test_an_answer_moved_to_another_question_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A genuine answer for a small target (little noise) filed under the site's question."""
    key = _key()
    question = noise_question(PRIVACY, TRAINING, n_train=N_TRAIN)
    other = noise_question(PrivacyConfig(target_epsilon=50.0), TRAINING, n_train=N_TRAIN)
    assert question is not None and other is not None
    cache = PlanCache(tmp_path, key)
    cache.put(other, (0.4, 49.0))
    record = json.loads(cache.path.read_text())
    ((_, entry),) = record["entries"].items()
    record["entries"] = {plan_cache._key(question): entry}  # noqa: SLF001
    cache.path.write_text(json.dumps(record))
    calls = _no_search(monkeypatch)
    plan = _plan(tmp_path, key)
    assert calls == [1], "the moved answer must be searched again"
    assert plan.noise_multiplier == _searched().noise_multiplier


def test_a_changed_question_is_searched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key()
    small = _plan(tmp_path, key)
    plan_cache._known.clear()  # noqa: SLF001
    calls = _no_search(monkeypatch)
    larger = _plan(tmp_path, key, n_train=4 * N_TRAIN)
    assert calls == [1] and larger.noise_multiplier < small.noise_multiplier


@pytest.mark.parametrize("changed", ["opacus", "search"])
def test_new_accountant_or_search_code_asks_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: str
) -> None:
    """An answer signed under older accountant or search code is not served by newer code."""
    key = _key()
    _plan(tmp_path, key)
    plan_cache._known.clear()  # noqa: SLF001 - a process running the upgraded code
    plan_site.cache_clear()
    if changed == "opacus":
        monkeypatch.setattr(plan_cache, "_accountant_version", lambda: "99.0.0")
    else:
        monkeypatch.setattr(plan_cache, "NOISE_SEARCH_REVISION", "upgraded")
    calls = _no_search(monkeypatch)
    _plan(tmp_path, key)
    assert calls == [1]


def test_an_unreadable_file_is_searched_again_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = _key()
    (tmp_path / FILE_NAME).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="fedsafe.client.plan_cache"):
        plan = _plan(tmp_path, key)
    assert "unreadable" in caplog.text
    assert plan == _searched()
    question = noise_question(PRIVACY, TRAINING, n_train=N_TRAIN)
    assert question is not None
    assert PlanCache(tmp_path, key).get(question) == (plan.noise_multiplier, plan.planned_epsilon)


def test_an_answer_verified_for_one_site_is_not_used_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process serves two sites: what site A's key signed (a stolen key, a misused one)
    sets A's noise at most; site B, with an empty cache of its own, searches for itself."""
    key_a, key_b = _key(), _key()
    question = noise_question(PRIVACY, TRAINING, n_train=N_TRAIN)
    assert question is not None
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    folder_a.mkdir(), folder_b.mkdir()
    PlanCache(folder_a, key_a).put(question, (0.3, 2.9))  # signed with A's own key
    calls = _no_search(monkeypatch)
    assert _plan(folder_a, key_a).noise_multiplier == 0.3  # verified for A: A's to answer for
    plan_b = _plan(folder_b, key_b)
    assert calls == [1], "site B must search, not take A's verified answer from memory"
    assert plan_b.noise_multiplier == _searched().noise_multiplier


def test_what_this_process_searched_serves_every_site_without_a_second_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    folder_a.mkdir(), folder_b.mkdir()
    calls = _no_search(monkeypatch)
    plan_a = _plan(folder_a, _key())
    plan_b = _plan(folder_b, _key())
    assert calls == [1] and plan_a.noise_multiplier == plan_b.noise_multiplier


def test_a_signed_answer_above_its_own_target_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even under the site's own signature (an older build's bug), an answer whose epsilon
    exceeds the question's target, or whose noise is not a positive number, is searched again."""
    key = _key()
    question = noise_question(PRIVACY, TRAINING, n_train=N_TRAIN)
    assert question is not None
    for bad in [(0.3, 3.5), (0.0, 2.9), (float("nan"), 2.9), (-1.0, 2.9)]:
        plan_cache._known.clear()  # noqa: SLF001
        PlanCache(tmp_path, key).put(question, bad)
        assert PlanCache(tmp_path, key).get(question) is None, bad
    calls = _no_search(monkeypatch)
    plan = _plan(tmp_path, key)
    assert calls == [1] and plan.noise_multiplier == _searched().noise_multiplier


def test_a_fifo_or_an_oversized_file_is_refused_without_hanging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever can write the site's folder plants a FIFO (a plain read would block forever)
    or a huge file; the site logs it, searches, and goes on."""
    import os

    key = _key()
    question = noise_question(PRIVACY, TRAINING, n_train=N_TRAIN)
    assert question is not None
    os.mkfifo(tmp_path / FILE_NAME)
    with caplog.at_level(logging.WARNING, logger="fedsafe.client.plan_cache"):
        assert PlanCache(tmp_path, key).get(question) is None
    assert "unreadable" in caplog.text
    (tmp_path / FILE_NAME).unlink()
    (tmp_path / FILE_NAME).write_bytes(b" " * (plan_cache.MAX_FILE_BYTES + 1))
    assert PlanCache(tmp_path, key).get(question) is None
    (tmp_path / FILE_NAME).unlink()
    (tmp_path / FILE_NAME).write_text("[" * 100_000 + "]" * 100_000)  # nesting past recursion
    assert PlanCache(tmp_path, key).get(question) is None


def test_a_cache_that_cannot_be_written_costs_a_search_not_the_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / FILE_NAME).mkdir()  # the replace onto a folder fails with an OSError
    with caplog.at_level(logging.WARNING, logger="fedsafe.client.plan_cache"):
        plan = _plan(folder, _key())
    assert plan == _searched()
    assert "not written" in caplog.text


def test_a_given_noise_needs_no_search_and_writes_nothing(tmp_path: Path) -> None:
    given = PrivacyConfig(target_epsilon=None, noise_multiplier=1.2)
    plan = site_plan(
        given, TRAINING, n_train=N_TRAIN, rounds=None, cache=PlanCache(tmp_path, _key())
    )
    assert plan.noise_multiplier == 1.2 and not (tmp_path / FILE_NAME).exists()


def test_a_training_site_keeps_its_answer_beside_its_store(tmp_path: Path) -> None:
    """Through the real round: the file appears next to the budget store, signed."""
    import torch

    from fedsafe.client.local_round import RoundContext, train_round
    from fedsafe.client.site import simulated_site
    from fedsafe.common import keys
    from fedsafe.common.config import ExperimentConfig, from_dict
    from fedsafe.common.data import dataset_info
    from fedsafe.common.models import model_for

    cfg = from_dict(ExperimentConfig, {"runs_dir": str(tmp_path), "training": {"rounds": 2}})
    site = simulated_site(cfg, 0, "run-1")
    state = {
        k: v.detach().clone()
        for k, v in model_for(cfg.model, dataset_info(cfg.dataset.name)).state_dict().items()
    }
    torch.set_num_threads(1)
    out = train_round(cfg, site, state, RoundContext("run-1", 1, cfg.compliance.purpose))
    cache = PlanCache(site.budget_store.parent, site.signing_key)
    record = json.loads(cache.path.read_text())
    ((_, entry),) = record["entries"].items()
    signed = json.loads(entry["payload"])
    assert signed["noise_multiplier"] == out.metrics[keys.NOISE_MULTIPLIER]
