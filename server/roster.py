"""The roll call: ask every connected node who it is, and believe only signed, enrolled answers."""

from __future__ import annotations

import logging
import time

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsafe.common import keys
from fedsafe.common.errors import FedsafeError
from fedsafe.server.compliance import Compliance, RejectedUpdateError

__all__ = ["wait_for_sites", "roll_call"]

log = logging.getLogger("fedsafe.server")


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
    grid: Grid, compliance: Compliance, node_ids: list[int], *, timeout_s: float
) -> dict[int, str]:
    """Send a query to each node; record who verified. Failures are logged and kept in the ledger.

    Any failure handling one answer (whatever its type) refuses that node only, never the run.
    """
    if not node_ids:
        return {}
    config = ConfigRecord({keys.RUN_ID: compliance.run_id, keys.PURPOSE: compliance.purpose})
    messages = [
        Message(RecordDict({keys.CONFIG: config}), dst_node_id=node, message_type=MessageType.QUERY)
        for node in node_ids
    ]
    answered: dict[int, str] = {}
    heard: set[int] = set()
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
    for node in sorted(set(node_ids) - set(answered) - compliance.refused_nodes):
        reason = f"node {node} gave no answer to the roll call within {timeout_s:.0f} s"
        log.warning("%s", reason)
        compliance.refused_nodes.add(node)
        compliance.error("roll_call", reason)
    return answered
