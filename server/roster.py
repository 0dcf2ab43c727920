"""The roll call: ask every connected node who it is, and believe only signed, enrolled answers."""

from __future__ import annotations

import logging
import time
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsafe.common import keys
from fedsafe.common.errors import FedsafeError
from fedsafe.server.compliance import Compliance, RejectedUpdateError

__all__ = ["EligibleGrid", "wait_for_sites", "roll_call"]

log = logging.getLogger("fedsafe.server")


class EligibleGrid:
    """The grid as the inner strategy samples it: nodes refused at the roll call are left out,
    so a refused node never takes a training slot (nor trains) for the rest of the run."""

    def __init__(self, grid: Grid, refused: set[int]) -> None:
        self._grid, self._refused = grid, refused

    def get_node_ids(self) -> list[int]:
        return [n for n in self._grid.get_node_ids() if n not in self._refused]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def wait_for_sites(grid: Grid, *, minimum: int, timeout_s: float) -> list[int]:
    """Connected node ids once at least `minimum` are there; a clear error after the timeout."""
    deadline = time.monotonic() + timeout_s
    while len(nodes := list(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            raise FedsafeError(
                f"only {len(nodes)} site(s) connected after {timeout_s:.0f} s; {minimum} needed"
            )
        time.sleep(0.5)
    return nodes


def roll_call(
    grid: Grid,
    compliance: Compliance,
    node_ids: list[int],
    *,
    timeout_s: float,
    patience_s: float = 0.0,
) -> dict[int, str]:
    """Send a query to each node; record who verified. Failures are logged and kept in the ledger.

    Any failure handling one answer (whatever its type) refuses that node only, never the run.
    With `patience_s` (a simulation, where a site is a process that may still be starting on
    a loaded machine), nodes that stayed silent are asked again, each time for `timeout_s`,
    until `patience_s` more has passed, with a message each time: a slow machine makes the
    run start later, it does not lose its sites.
    """
    if not node_ids:
        return {}
    answered: dict[int, str] = {}
    heard: set[int] = set()
    pending = list(node_ids)
    deadline = time.monotonic() + timeout_s + patience_s
    while True:
        _ask(grid, compliance, pending, timeout_s, answered, heard)
        pending = [n for n in pending if n not in heard]
        left = deadline - time.monotonic()
        if not pending or patience_s <= 0 or left <= 0:
            break
        log.warning(
            "roll call: %d of %d site(s) have not answered yet (still starting?); asking "
            "again, waiting up to %.0f s more",
            len(pending),
            len(node_ids),
            left,
        )
    waited = timeout_s + (patience_s if patience_s > 0 else 0)
    for node in sorted(set(node_ids) - set(answered) - compliance.refused_nodes):
        reason = f"node {node} gave no answer to the roll call within {waited:.0f} s"
        log.warning("%s", reason)
        compliance.refused_nodes.add(node)
        compliance.error("roll_call", reason)
    return answered


def _ask(
    grid: Grid,
    compliance: Compliance,
    node_ids: list[int],
    timeout_s: float,
    answered: dict[int, str],
    heard: set[int],
) -> None:
    """One round of questions to `node_ids`; answers and refusals are recorded as they come."""
    config = ConfigRecord({keys.RUN_ID: compliance.run_id, keys.PURPOSE: compliance.purpose})
    messages = [
        Message(RecordDict({keys.CONFIG: config}), dst_node_id=node, message_type=MessageType.QUERY)
        for node in node_ids
    ]
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        node = reply.metadata.src_node_id
        if node in heard or (node not in node_ids and not reply.has_error()):
            log.warning("roll call: ignored a second or unsolicited answer from node %d", node)
            continue
        heard.add(node)
        if reply.has_error():
            reason = f"node {node} did not answer the roll call: {reply.error.reason}"
        else:
            try:
                answered[node] = compliance.admit_identity(node, reply.content)
                continue
            except (RejectedUpdateError, FedsafeError, KeyError, ValueError) as err:
                reason = f"node {node} refused at roll call: {err}"
            except Exception as err:  # noqa: BLE001 - one node's answer never ends the run
                log.exception("roll call: the answer of node %d could not be handled", node)
                reason = f"node {node} refused at roll call: {type(err).__name__}: {err}"
        log.warning("%s", reason)
        compliance.refused_nodes.add(node)
        compliance.error("roll_call", reason)
