"""A slow machine makes a run start later, never lose its sites: the roll call asks again
(bounded, saying so) while a simulated site's process is still starting."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from conftest import Federation, Site
from flwr.app import Message

from fedsafe.server.roster import roll_call


def _starting(polls: int) -> Callable[[Site, Message], list[Message]]:
    """A site whose process answers nothing for its first `polls` questions (still importing)."""
    asked = [0]

    def reply(site: Site, msg: Message) -> list[Message]:
        asked[0] += 1
        return [] if asked[0] <= polls else [Message(site.identity(msg), reply_to=msg)]

    return reply


def test_a_site_still_starting_is_asked_again_and_admitted(
    federation: Callable[..., Federation], caplog: pytest.LogCaptureFixture
) -> None:
    slow = Site("slow")
    slow.roll_call_reply = _starting(polls=2)
    fed = federation(Site("a"), Site("b"), slow)
    with caplog.at_level(logging.WARNING, logger="fedsafe.server"):
        answered = roll_call(
            fed.grid, fed.compliance, fed.grid.get_node_ids(), timeout_s=0.01, patience_s=30
        )
    assert sorted(answered.values()) == ["a", "b", "slow"]
    assert not fed.compliance.refused_nodes
    assert "1 of 3 site(s) have not answered yet (still starting?)" in caplog.text


def test_without_patience_a_silent_site_is_refused_at_once(
    federation: Callable[..., Federation],
) -> None:
    """The control: the same slow start, no patience (a deployed site that is silent is down)."""
    slow = Site("slow")
    slow.roll_call_reply = _starting(polls=2)
    fed = federation(Site("a"), Site("b"), slow)
    answered = roll_call(fed.grid, fed.compliance, fed.grid.get_node_ids(), timeout_s=0.01)
    assert "slow" not in answered.values() and len(fed.compliance.refused_nodes) == 1
    assert "gave no answer to the roll call" in fed.errors()


def test_patience_is_bounded(federation: Callable[..., Federation]) -> None:
    dead = Site("dead")
    dead.roll_call_reply = _starting(polls=10**9)
    fed = federation(Site("a"), Site("b"), dead)
    answered = roll_call(
        fed.grid, fed.compliance, fed.grid.get_node_ids(), timeout_s=0.01, patience_s=0.2
    )
    assert "dead" not in answered.values()
    assert "gave no answer to the roll call within 0 s" in fed.errors()
