"""`fedsafe site start`: check site.yaml and the data, then run the SuperNode and the worker."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fedsafe.client.budget import BudgetStore, StoreAnchor
from fedsafe.client.site_config import SiteConfig, load_site_config
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.crypto.pki import load_signing_private_key
from fedsafe.common.errors import ConfigError
from fedsafe.common.flower_env import OFFLINE_FLOWER_ENV

__all__ = [
    "SiteCheck",
    "check_site",
    "supernode_command",
    "supernode_env",
    "add_start_parser",
    "run_start",
    "runtime_address",
    "secret_path",
    "NODE_CONFIG_KEY",
]

NODE_CONFIG_KEY = "site-config"  # the ClientApp reads context.node_config[NODE_CONFIG_KEY]


@dataclass(frozen=True)
class SiteCheck:
    """What the pre-flight check saw: counts only, never a value from the data."""

    config: SiteConfig
    train_rows: int
    test_rows: int
    n_features: int


def check_site(config_path: Path) -> SiteCheck:
    """Validate site.yaml, every data row against the schema, and the budget store.

    Runs before any connection: a site with a typo in its policy or a bad row must fail
    here, with the key or the row named, not in the middle of a federated round.
    """
    cfg = load_site_config(Path(config_path))
    data = cfg.load_data(ExperimentConfig())
    anchor = StoreAnchor.in_keys_dir(cfg.keys_dir, load_signing_private_key(cfg.signing_key))
    with BudgetStore.open(cfg.budget_store, create=True, anchor=anchor):
        pass  # a store edited, rewound or replaced stops the site here, before it connects
    return SiteCheck(cfg, len(data.y_train), len(data.y_test), int(data.x_train.shape[1]))


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def supernode_command(
    cfg: SiteConfig,
    *,
    runtime_port: int | None = None,
    isolation: str = "subprocess",
    max_retries: int | None = None,
    max_wait_time: float | None = None,
    secret_file: Path | None = None,
) -> list[str]:
    """flower-supernode over TLS (site's CA) with node auth and `site-config` as node config.

    Only the site.yaml path crosses into Flower; the ClientApp re-reads the file itself.
    The Runtime API (ClientAppIo) listens on loopback, on `runtime_api` from site.yaml
    or else on `runtime_port`, so several sites can run on one machine.
    """
    if "'" in str(cfg.path):
        raise ConfigError(
            "site config", str(cfg.path), "a path without single quotes", source=str(cfg.path)
        )
    if cfg.runtime_api is not None:
        host, _, port = cfg.runtime_api.rpartition(":")
    else:
        host, port = "127.0.0.1", str(runtime_port or _free_loopback_port())
    command = [
        str(Path(sys.executable).parent / "flower-supernode"),
        "--root-certificates",
        str(cfg.ca_cert),
        "--superlink",
        cfg.superlink,
        "--auth-supernode-private-key",
        str(cfg.auth_key),
        "--node-config",
        f"{NODE_CONFIG_KEY}='{cfg.path}'",
        "--isolation",
        isolation,
        "--host",
        host.strip("[]"),
        "--port",
        port,
    ]
    if secret_file is not None:  # without it any local process may claim this node's tasks
        command += ["--superexec-auth-secret-file", str(secret_file)]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    if max_wait_time is not None:
        command += ["--max-wait-time", str(max_wait_time)]
    return command


def supernode_env(cfg: SiteConfig) -> dict[str, str]:
    """Offline Flower, FLWR_HOME inside the kit (installed apps stay there), venv on PATH."""
    env = dict(os.environ)
    env.update(OFFLINE_FLOWER_ENV)
    env["FLWR_HOME"] = str(cfg.path.parent / "flwr-home")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    # Flower starts a ClientApp process per message and polls for tasks every second by
    # default; 0.1 s takes most of that wait out of each message (the bench measured it).
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    return env


def runtime_address(cfg: SiteConfig) -> str:
    """The SuperNode's Runtime API: `runtime_api` from site.yaml, else a free loopback port."""
    return cfg.runtime_api or f"127.0.0.1:{_free_loopback_port()}"


def secret_path(cfg: SiteConfig) -> Path:
    """Where `site start` writes the SuperExec secret shared by the SuperNode and the worker."""
    return cfg.path.parent / "flwr-home" / "superexec.secret"


def _start_worker_mode(args: argparse.Namespace, cfg: SiteConfig, out: TextIO) -> int:
    from fedsafe.client.supervise import Supervisor, worker_command, write_secret
    from fedsafe.client.worker import check_flower_version

    check_flower_version()
    address = runtime_address(cfg)
    secret = secret_path(cfg)
    host, _, port = address.rpartition(":")
    command = supernode_command(
        cfg,
        runtime_port=int(port),
        isolation="process",
        max_retries=args.max_retries,
        max_wait_time=args.max_wait_time,
        secret_file=secret,
    )
    worker = worker_command(cfg.path, f"{host}:{port}", secret)
    approved = cfg.approved_code.entries()
    shown = ", ".join(approved) if approved else "none (every run is refused)"
    print(f"approved code: {shown}", file=out)
    if args.dry_run:
        print(" ".join(command), file=out)
        print(" ".join(worker), file=out)
        return 0
    env = supernode_env(cfg)
    Path(env["FLWR_HOME"]).mkdir(mode=0o700, exist_ok=True)
    write_secret(secret)
    return Supervisor(command, worker, env, address, out).run()


def run_start(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Check, then supervise the SuperNode and the worker (or, stock, become flower-supernode)."""
    out = out or sys.stdout
    check = check_site(args.config)
    cfg = check.config
    print(
        f"site {cfg.name}: config {cfg.path} valid; data {cfg.data} valid against {cfg.schema} "
        f"({check.train_rows} training rows, {check.test_rows} held out, "
        f"{check.n_features} features); budget store {cfg.budget_store}",
        file=out,
    )
    print(f"connecting to SuperLink {cfg.superlink} (TLS, CA {cfg.ca_cert})", file=out)
    if args.isolation == "process":
        return _start_worker_mode(args, cfg, out)
    print(
        "stock Flower executor: the ClientApp of each run's FAB is executed here and "
        "approved_code is NOT enforced",
        file=out,
    )
    command = supernode_command(
        cfg,
        isolation=args.isolation,
        max_retries=args.max_retries,
        max_wait_time=args.max_wait_time,
    )
    if args.dry_run:
        print(" ".join(command), file=out)
        return 0
    out.flush()
    env = supernode_env(cfg)
    Path(env["FLWR_HOME"]).mkdir(mode=0o700, exist_ok=True)
    os.execve(command[0], command, env)
    return 0  # not reached


def add_start_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `start --config site.yaml [--dry-run] [--max-retries N] [--max-wait-time S]`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "start",
        help="check site.yaml and the data, then connect this site's SuperNode and worker",
        description="Validate site.yaml and every data row against the schema before "
        "connecting; then run flower-supernode (process isolation) and the fedsafe site "
        "worker in the foreground, restarting the worker if it dies (Ctrl-C stops both). "
        "The worker answers every task with this host's installed fedsafe ClientApp and "
        "refuses runs whose FAB is not in approved_code.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the site's site.yaml")
    parser.add_argument("--dry-run", action="store_true", help="check and print the command")
    parser.add_argument(
        "--isolation",
        choices=("process", "subprocess"),
        default="process",
        help="process (default): the fedsafe site worker claims every task; subprocess: "
        "stock Flower, one process per message running the FAB's ClientApp (no approval)",
    )
    parser.add_argument("--max-retries", type=int, default=None, help="give up after N tries")
    parser.add_argument(
        "--max-wait-time", type=float, default=None, help="give up after S seconds unconnected"
    )
    parser.set_defaults(func=run_start)
    return parser
