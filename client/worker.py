"""The site worker: one long-lived process that claims the SuperNode's tasks and runs OUR ClientApp.

`flower-supernode --isolation process` starts no executor; this process claims each task
through the SuperNode's Runtime API (loopback, SuperExec-authenticated with the site's
secret) using Flower's own pull/push helpers, refuses tasks of runs whose FAB the site has
not approved, and answers every other one with the ClientApp installed on this host
(`client.app.build_client_app()`), never with code from the FAB.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from fedsafe.common.errors import FedsafeError
from fedsafe.common.flower_env import apply_offline_flower_env

__all__ = ["FLOWER_VERSION", "check_flower_version", "SiteWorker", "main"]

# The Runtime API calls, helpers and task life cycle below are Flower 1.39.0's own: another
# release may change any of them, so the worker refuses to start on one.
FLOWER_VERSION = "1.39.0"
_CLAIM_METHODS = (
    "/flwr.proto.Runtime/AcquireTask",
    "/flwr.proto.Runtime/PullPendingTasks",
    "/flwr.proto.Runtime/ClaimTask",
)
log = logging.getLogger("fedsafe.worker")

if TYPE_CHECKING:
    from fedsafe.client.site_config import SiteConfig


def check_flower_version(found: str | None = None) -> None:
    """Fail loudly unless the installed Flower is the release this worker was written against."""
    import flwr

    found = flwr.__version__ if found is None else found
    if found != FLOWER_VERSION:
        raise FedsafeError(
            f"the fedsafe site worker was written against Flower {FLOWER_VERSION} internals "
            f"(Runtime API task claims, pull/push helpers); Flower {found} is installed. "
            f"Install flwr=={FLOWER_VERSION} (constraints.txt) or run the stock SuperNode "
            "with `fedsafe site start --isolation subprocess`."
        )


def _loopback(address: str) -> str:
    host = address.rpartition(":")[0].strip("[]")
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise FedsafeError(f"the worker talks to the Runtime API on loopback only, not {address}")
    return address


class SiteWorker:
    """Imports once, keeps the site's config loaded, serves one task at a time."""

    def __init__(self, site_yaml: Path, runtime_api: str, secret: bytes, *, poll_s: float = 0.2):
        check_flower_version()
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )
        from flwr.supercore.runtime import RuntimeHttpClient

        from fedsafe.client.app import build_client_app  # the site's installed ClientApp
        from fedsafe.client.site_config import load_site_config

        self.site_yaml = Path(site_yaml).resolve()
        self.runtime_api = _loopback(runtime_api)
        self.poll_s = poll_s
        self._load = load_site_config
        self.cfg = load_site_config(self.site_yaml)
        self._stamp = self.site_yaml.stat().st_mtime_ns
        self.app = build_client_app()
        self._claims = RuntimeHttpClient.from_server_address(
            self.runtime_api,
            insecure=True,  # loopback only (checked above); Flower's own SuperExec does the same
            root_certificates=None,
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                SuperExecAuthHttpInterceptor(
                    master_secret=secret, protected_methods=_CLAIM_METHODS
                ),
            ],
        )
        self.served = 0

    def _config(self) -> SiteConfig:
        """site.yaml re-read when it changed (an approval added meanwhile), else the loaded one."""
        stamp = self.site_yaml.stat().st_mtime_ns
        if stamp != self._stamp:
            self.cfg = self._load(self.site_yaml)  # a broken edit raises: the supervisor logs it
            self._stamp = stamp
        return self.cfg

    def claim_once(self) -> bool:
        """Claim one pending ClientApp task and serve it; False when there was none."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        res = self._claims.AcquireTask(
            AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        )
        if not (res.HasField("task") and res.token):
            return False
        self.serve(res.token)
        return True

    def serve(self, token: str) -> None:
        """Pull the task's message, answer it (or refuse it), push the reply and the task status."""
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )
        from flwr.supercore.runtime import RuntimeHttpClient
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        from fedsafe.client.approval import APPROVAL_CODE, approve_command, fab_sha256
        from fedsafe.client.site import SITE_CONFIG
        from fedsafe.client.worker_io import heartbeat_fn, pull_task_input

        client = RuntimeHttpClient.from_server_address(
            self.runtime_api,
            insecure=True,
            root_certificates=None,
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                RuntimeTokenHttpInterceptor(token),
            ],
        )
        heartbeat = HeartbeatSender(heartbeat_fn(client))
        heartbeat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "the site worker failed"
        started = time.monotonic()
        pulled = answered = started
        try:
            message, context, run, fab = pull_task_input(client)
            pulled = time.monotonic()
            fab_hash = fab_sha256(fab.content)  # computed here from the bytes, not Flower's label
            cfg = self._config()
            if not cfg.approved_code.allows(fab_hash, run.fab_id, run.fab_version):
                reason = (
                    f"site {cfg.name}: code not approved: run {run.run_id} has FAB sha256 "
                    f"{fab_hash} ({run.fab_id} {run.fab_version}); the site admin approves it "
                    f"with `{approve_command(self.site_yaml, fab_hash)}`"
                )
                log.warning("refused %s: %s", message.metadata.message_type, reason)
                reply = Message(Error(code=APPROVAL_CODE, reason=reason), reply_to=message)
                status, details = SubStatus.COMPLETED, reason
            else:
                # The site's own site.yaml, whatever node config reached the SuperNode.
                context.node_config = {**context.node_config, SITE_CONFIG: str(self.site_yaml)}
                reply = self.app(message=message, context=context)
                status, details = SubStatus.COMPLETED, ""
            answered = time.monotonic()
        except Exception as err:  # noqa: BLE001 - every failure becomes an error reply
            log.exception("task failed")
            details = f"{type(err).__name__}: {err}"
            if message is not None:
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                    reply_to=message,
                )
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, status, details)
            finally:
                heartbeat.stop()
                client.close()
        self.served += 1
        kind = message.metadata.message_type if message is not None else "?"
        done = time.monotonic()
        log.info(
            "served %s in %.3f s (pull %.3f, app %.3f, push %.3f; %d so far)",
            kind,
            done - started,
            pulled - started,
            max(answered - pulled, 0.0),
            done - max(answered, pulled),
            self.served,
        )

    def run(self, stop: threading.Event, busy: threading.Event | None = None) -> None:
        """Claim tasks until `stop` is set; a claim or task in progress is finished first."""
        busy = busy or threading.Event()
        log.info(
            "site worker for %s: Flower %s, ClientApp %s, Runtime API %s (pid %d)",
            self.cfg.name,
            FLOWER_VERSION,
            sys.modules["fedsafe.client.app"].__file__,
            self.runtime_api,
            os.getpid(),
        )
        while not stop.is_set():
            busy.set()
            try:
                if self.claim_once():
                    continue
            except Exception as err:  # noqa: BLE001 - the SuperNode restarting, say: retry
                log.warning("claiming a task failed: %s", err)
                stop.wait(2.0)
            finally:
                busy.clear()
            stop.wait(self.poll_s)
        self._claims.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m client.worker --config site.yaml --runtime-api 127.0.0.1:P --secret-file F`."""
    stop = threading.Event()
    busy = threading.Event()  # set while a claim or a task is in progress

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if not busy.is_set():  # still importing, or idle between claims: leave now
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)  # first: a stop during the imports is a clean exit
    signal.signal(signal.SIGINT, _stop)
    apply_offline_flower_env()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--runtime-api", required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between claims")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per 0.2 s claim otherwise
    try:
        secret = args.secret_file.read_bytes()
        worker = SiteWorker(args.config, args.runtime_api, secret, poll_s=args.poll)
    except (FedsafeError, OSError) as err:
        print(f"fedsafe site worker: {err}", file=sys.stderr)
        return 2
    worker.run(stop, busy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
