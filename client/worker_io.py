"""Flower 1.39's task input pull (short retry) and task heartbeat, for a long-lived worker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fedsafe.worker")

__all__ = ["pull_task_input", "heartbeat_fn", "PULL_BACKOFF_S", "PULL_BACKOFF_CAP_S"]

# A warm worker claims a task within a poll of its creation, while the SuperNode is still
# storing the message's objects; Flower's helper then backs off 1 s (sized for a process
# that took seconds to start). Measured: about 1 s of every message. These retry sooner.
PULL_BACKOFF_S = 0.02
PULL_BACKOFF_CAP_S = 0.5


def pull_task_input(client: Any) -> tuple[Any, Any, Any, Any]:
    """(message, context, run, fab) of the task `client`'s token names.

    The same calls, in the same order, as `flwr.supernode.runtime.run_clientapp.pull_task_input`
    in Flower 1.39.0 (the worker's pin), with only the object-pull backoff changed.
    """
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("no message for this task from the Runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
        initial_backoff=PULL_BACKOFF_S,
        backoff_cap=PULL_BACKOFF_CAP_S,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message, context, run, fab


def heartbeat_fn(client: Any) -> Callable[[], bool]:
    """Flower's task heartbeat without its SIGINT on failure: this process outlives the task."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    def beat() -> bool:
        try:
            res = client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except (httpx.TransportError, httpx.HTTPStatusError):
            return False
        if not res.success:
            log.warning("the SuperNode no longer knows this task (heartbeat refused)")
        return True

    return beat
