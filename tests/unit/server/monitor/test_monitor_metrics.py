"""The Prometheus endpoint: loopback, this run's own registry, and text a peer cannot forge."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedsafe.server.monitor import MetricsServer, MonitorError, RunState
from fedsafe.server.monitor.state import MAX_SITES, OVERFLOW_SITE

HOSTILE = 'evil"} 1\nfedsafe_round 999\n# TYPE x counter\n\\'


def _state(run_id: str = "run-1") -> RunState:
    state = RunState(run_id, rounds_planned=3, round_timeout_s=600.0, clock=lambda: 100.0)
    state.round_started(2)
    return state


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode("utf-8")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


@pytest.fixture
def served() -> Iterator[tuple[RunState, MetricsServer]]:
    state = _state()
    server = MetricsServer.start(state, host="127.0.0.1", port=0)
    yield state, server
    server.stop()


def test_a_scrape_shows_round_sites_epsilon_cap_ledger_and_last_error(
    served: tuple[RunState, MetricsServer],
) -> None:
    state, server = served
    state.site_outcome(2, "cleveland", "trained", epsilon=1.5, cap=3.0)
    state.site_outcome(2, "hungary", "dropped")
    state.ledger(41, "ab" * 32)
    state.ledger_check(None)
    state.error("site hungary: no reply before the round timeout", 2)
    state.alert("site_dropped")

    samples = _scrape(server.url)

    assert samples["fedsafe_round"] == [({}, 2.0)]
    by_outcome = {labels["outcome"]: value for labels, value in samples["fedsafe_round_sites"]}
    assert by_outcome == {"trained": 1.0, "refused": 0.0, "excluded": 0.0, "dropped": 1.0}
    assert samples["fedsafe_site_epsilon"] == [({"site": "cleveland"}, 1.5)]
    assert samples["fedsafe_site_epsilon_cap"] == [({"site": "cleveland"}, 3.0)]
    assert samples["fedsafe_site_epsilon_cap_fraction"] == [({"site": "cleveland"}, 0.5)]
    assert samples["fedsafe_ledger_head_seq"] == [({}, 41.0)]
    assert samples["fedsafe_ledger_head_info"] == [({"hash": "ab" * 32}, 1.0)]
    assert samples["fedsafe_ledger_verified"] == [({}, 1.0)]
    assert samples["fedsafe_last_error_info"][0][0]["round"] == "2"
    assert samples["fedsafe_alerts_total"] == [({"rule": "site_dropped"}, 1.0)]
    assert samples["fedsafe_round_elapsed_seconds"] == [({}, 0.0)]


def test_a_peer_sent_site_name_is_one_escaped_label_and_forges_no_sample(
    served: tuple[RunState, MetricsServer],
) -> None:
    """A refusal's reason may name the site (recorder.site_failed): that name is a peer's."""
    state, server = served
    state.site_outcome(2, HOSTILE, "refused")
    state.error(f"site {HOSTILE}: refused", 2)

    samples = _scrape(server.url)

    assert samples["fedsafe_round"] == [({}, 2.0)]  # no forged fedsafe_round 999
    sites = {labels["site"] for labels, _ in samples["fedsafe_site_rounds_total"]}
    assert sites == {HOSTILE}  # round-trips exactly, as one label value
    assert samples["fedsafe_last_error_info"][0][0]["message"] == f"site {HOSTILE}: refused"
    assert "x" not in samples


def test_each_run_has_its_own_registry_and_the_global_one_stays_clean() -> None:
    first, second = _state("run-a"), _state("run-b")
    a = MetricsServer.start(first, host="127.0.0.1", port=0)
    b = MetricsServer.start(second, host="127.0.0.1", port=0)
    try:
        assert _scrape(a.url)["fedsafe_run_info"][0][0]["run_id"] == "run-a"
        assert _scrape(b.url)["fedsafe_run_info"][0][0]["run_id"] == "run-b"
    finally:
        a.stop()
        b.stop()
    assert b"fedsafe_" not in generate_latest(REGISTRY)


def test_a_taken_port_is_a_monitor_error_naming_the_setting() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(MonitorError, match=rf"127.0.0.1:{port}.*monitoring.port"):
            MetricsServer.start(_state(), host="127.0.0.1", port=port)


def test_stop_releases_the_port() -> None:
    server = MetricsServer.start(_state(), host="127.0.0.1", port=0)
    port = server.port
    server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_server_binds_loopback_only(served: tuple[RunState, MetricsServer]) -> None:
    _, server = served
    assert server.url.startswith("http://127.0.0.1:")


def test_a_flood_of_site_names_is_bounded() -> None:
    state = _state()
    for i in range(MAX_SITES + 50):
        state.site_outcome(1, f"site-{i}-" + "x" * 500, "refused")
    snapshot = state.snapshot()
    assert len(snapshot["sites"]) == MAX_SITES + 1
    assert snapshot["sites"][OVERFLOW_SITE]["rounds"]["refused"] == 50
    assert max(len(name) for name in snapshot["sites"]) <= 64
