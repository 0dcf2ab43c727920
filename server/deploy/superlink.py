"""The coordinator's SuperLink and what it knows: start it, enrol sites, read runs and status."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedsafe.common.crypto.pki import (
    init_server_sealing_key,
    init_server_signing_key,
    load_auth_public_key,
    load_signing_public_key,
)
from fedsafe.server.deploy.config import ServerDeployConfig
from fedsafe.server.deploy.flower import list_nodes, list_runs, register_site, write_connection
from fedsafe.server.deploy.process import (
    DeployError,
    ManagedProcess,
    flower_bin,
    flower_env,
    wait_for_port,
)

__all__ = [
    "READY_FILE",
    "ENROLMENTS",
    "superlink_command",
    "start_superlink",
    "enroll",
    "ensure_server_keys",
    "file_signing_key",
    "status",
    "wait_for_run",
    "latest_round",
]

READY_FILE = "superlink.ready"  # written in the workdir once the SuperLink answers
_FINISHED = "finished"
ALREADY_ENROLLED = "already in use"  # the SuperLink's answer for a key enrolled before
ENROLMENTS = "enrolments.json"  # node id -> site name, kept by `enroll` for `status`


def superlink_command(cfg: ServerDeployConfig) -> list[str]:
    """flower-superlink with TLS, SuperNode auth, on-disk state and the configured addresses."""
    host, _, port = cfg.control_api.rpartition(":")
    return [
        flower_bin("flower-superlink"),
        "--ssl-ca-certfile",
        str(cfg.ca_cert),
        "--ssl-certfile",
        str(cfg.cert),
        "--ssl-keyfile",
        str(cfg.key),
        "--enable-supernode-auth",
        "--database",
        str(cfg.database),
        "--fleet-api-type",
        "grpc-rere",
        "--fleet-api-address",
        cfg.fleet_api,
        "--host",
        host.strip("[]"),
        "--port",
        port,
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
    ]


def start_superlink(cfg: ServerDeployConfig, *, timeout_s: float = 60.0) -> ManagedProcess:
    """Start the SuperLink and wait until its Fleet and Control APIs accept connections.

    The SuperLink's log goes to `workdir/logs/superlink.log`; a SuperLink that exits or
    does not open its ports within `timeout_s` is stopped and reported with that log's tail.
    """
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    (cfg.workdir / READY_FILE).unlink(missing_ok=True)
    write_connection(cfg)
    log_path = cfg.workdir / "logs" / "superlink.log"
    process = ManagedProcess(
        "superlink",
        superlink_command(cfg),
        env=flower_env(cfg.flwr_home),
        cwd=cfg.workdir,
        log_path=log_path,
    )
    try:
        wait_for_port(cfg.fleet_api, timeout_s=timeout_s, process=process.process)
        wait_for_port(cfg.control_client_address, timeout_s=timeout_s, process=process.process)
    except DeployError as err:
        process.stop()
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise DeployError(
            f"SuperLink did not start: {err}\n--- {log_path} (tail) ---\n{tail}"
        ) from None
    return process


def enroll(
    cfg: ServerDeployConfig,
    auth_pub: Path,
    name: str | None = None,
    *,
    signing_pub: Path | None = None,
) -> int:
    """Check the key files locally (named errors), then register the SuperNode key.

    The SuperNode key (auth.pub) goes to the SuperLink, which then lets that node in;
    the signing key (signing.pub), when given, is filed as `site_keys_dir/<name>.pub`,
    where the ServerApp checks the site's signed roll-call answers and attestations.
    Flower's node list carries no names, so node id -> name is kept in
    `workdir/enrolments.json` for `fedsafe server status`.
    """
    load_auth_public_key(Path(auth_pub))
    if signing_pub is not None:
        if not name:
            raise DeployError("enrolling a signing key needs the site's name (--name)")
        load_signing_public_key(Path(signing_pub))
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    node_id = register_site(cfg, Path(auth_pub), name)
    if signing_pub is not None and name:
        file_signing_key(cfg, name, signing_pub)
    book = _enrolments(cfg)
    book[str(node_id)] = {
        "name": name or Path(auth_pub).stem,
        "auth_pub": str(Path(auth_pub).resolve()),
    }
    (cfg.workdir / ENROLMENTS).write_text(json.dumps(book, indent=2), encoding="utf-8")
    return node_id


def file_signing_key(cfg: ServerDeployConfig, name: str, signing_pub: Path) -> Path:
    """Put a site's signing.pub where the ServerApp looks for `<name>.pub`."""
    load_signing_public_key(Path(signing_pub))
    cfg.site_keys_dir.mkdir(parents=True, exist_ok=True)
    target = cfg.site_keys_dir / f"{name}.pub"
    shutil.copyfile(signing_pub, target)
    return target


def _enrolments(cfg: ServerDeployConfig) -> dict[str, dict[str, str]]:
    path = cfg.workdir / ENROLMENTS
    if not path.is_file():
        return {}
    data: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def ensure_server_keys(cfg: ServerDeployConfig) -> tuple[Path, Path]:
    """The ServerApp's Ed25519 and X25519 key pairs, created once; returns the public halves.

    They exist before any run so the coordinator can hand `sealing.pub` to every site,
    which pins it in its kit: a site seals its updates to that key and no other.
    """
    folder = cfg.server_keys_dir
    signing, sealing = folder / "server_signing.pub", folder / "sealing.pub"
    if not (folder / "server_signing.key").exists():
        init_server_signing_key(folder)
    if not (folder / "sealing.key").exists():
        init_server_sealing_key(folder)
    return signing, sealing


def latest_round(runs_dir: Path) -> dict[str, Any] | None:
    """The newest run folder's last finished round, from its metrics.jsonl (None if no run)."""
    folders = sorted(
        (p for p in runs_dir.glob("*/metrics.jsonl") if p.is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    if not folders:
        return None
    metrics = folders[-1]
    last: dict[str, Any] = {"run_dir": str(metrics.parent), "round": 0, "sites": []}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if row.get("phase") == "global":
            last["round"] = max(last["round"], int(row.get("round", 0)))
        elif "site" in row and row["site"] not in last["sites"]:
            last["sites"].append(row["site"])
    last["finished"] = (metrics.parent / "summary.json").is_file()
    return last


def status(cfg: ServerDeployConfig) -> dict[str, Any]:
    """Runs, enrolled and connected sites (from the SuperLink), and the latest run's round."""
    book = _enrolments(cfg)
    nodes = [
        {**n, "name": book.get(str(n.get("node-id")), {}).get("name", "")} for n in list_nodes(cfg)
    ]
    return {
        "superlink": {"fleet_api": cfg.fleet_api, "control_api": cfg.control_api},
        "runs": list_runs(cfg),
        "enrolled": [n for n in nodes if n.get("status") != "unregistered"],
        "connected": [n for n in nodes if n.get("status") == "online"],
        "latest_run_folder": latest_round(cfg.runs_dir),
    }


def wait_for_run(
    cfg: ServerDeployConfig,
    run_id: int,
    *,
    timeout_s: float,
    poll_s: float = 2.0,
    alive: Callable[[], bool] = lambda: True,
) -> str:
    """Poll `flwr ls --run-id` until the run is finished; its status text (finished:completed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise DeployError(f"the SuperLink exited while run {run_id} was going")
        runs = list_runs(cfg, run_id)
        state = str(runs[0].get("status", "")) if runs else ""
        if state.startswith(_FINISHED):
            return state
        time.sleep(poll_s)
    raise DeployError(f"run {run_id} did not finish within {timeout_s:g} s")
