"""`fedsafe server start|submit|fab-hash|...`: TLS SuperLink, node auth, `flwr run`."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from fedsafe.common.crypto.pki import (
    init_server_sealing_key,
    init_server_signing_key,
    load_auth_public_key,
    load_signing_public_key,
)
from fedsafe.server.deploy_config import ServerDeployConfig, load_server_config
from fedsafe.server.deploy_flower import (
    list_nodes,
    list_runs,
    register_site,
    staged_fab_hash,
    submit_run,
    write_connection,
)
from fedsafe.server.deploy_process import (
    DeployError,
    ManagedProcess,
    flower_bin,
    flower_env,
    wait_for_port,
)
from fedsafe.server.deploy_resume import refuse_restart, resume_target, with_resume

__all__ = [
    "superlink_command",
    "start_superlink",
    "enroll",
    "ensure_server_keys",
    "file_signing_key",
    "status",
    "wait_for_run",
    "latest_round",
    "add_server_parser",
    "READY_FILE",
]

READY_FILE = "superlink.ready"  # written in the workdir once the SuperLink answers
_FINISHED = "finished"
_ALREADY = "already in use"  # the SuperLink's answer for a key enrolled before
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


# --------------------------------------------------------------------------- commands


def _print_json(data: Any, out: TextIO) -> None:
    print(json.dumps(data, indent=2, default=str), file=out)


class _Stop(Exception):
    """SIGTERM/SIGINT received: leave the wait loop and stop the SuperLink."""


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def _config(args: argparse.Namespace, out: TextIO) -> ServerDeployConfig:
    """server.yaml; with --resume, the run to continue (checked before anything starts)."""
    cfg = load_server_config(args.config)
    if not getattr(args, "resume", False):
        if getattr(args, "run_id", None):
            raise DeployError("--run-id names the run to continue: use it with --resume")
        refuse_restart(cfg)
        return cfg
    target = resume_target(cfg, args.run_id)
    print(
        f"resuming run {target.run_id} after round {target.round} (run folder {target.run_dir})",
        file=out,
        flush=True,
    )
    return with_resume(cfg, target)


def run_start(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Start the SuperLink, enrol listed sites, submit the run, supervise until stopped.

    With --resume the SuperLink starts on the same state database (enrolments kept) and
    the submitted run continues a run folder from its checkpoint (`run_id`, `resume=true`).
    """
    out = out or sys.stdout
    if args.resume and args.no_run:
        raise DeployError("--resume submits the continued run: drop --no-run")
    cfg = _config(args, out)
    if args.resume and not cfg.submit:
        raise DeployError(
            "--resume submits the continued run, but run.submit is false: start the "
            "SuperLink, then `fedsafe server submit --resume`"
        )
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    superlink = None
    try:
        _, sealing = ensure_server_keys(cfg)
        print(f"ServerApp sealing key (give to every site): {sealing}", file=out)
        _warn_control_api(cfg, out)
        superlink = start_superlink(cfg, timeout_s=args.start_timeout)
        print(
            f"SuperLink pid {superlink.pid}: fleet {cfg.fleet_api}, control {cfg.control_api}",
            file=out,
        )
        print(f"  log {superlink.log_path}; state {cfg.database}", file=out, flush=True)
        for site in cfg.sites:
            try:
                node_id = enroll(cfg, site.auth_pub, site.name, signing_pub=site.signing_pub)
                print(f"enrolled {site.name}: node {node_id}", file=out, flush=True)
            except DeployError as err:
                if _ALREADY not in str(err):
                    raise
                if site.signing_pub is not None:
                    file_signing_key(cfg, site.name, site.signing_pub)
                print(f"{site.name}: already enrolled (state kept on disk)", file=out, flush=True)
        (cfg.workdir / READY_FILE).write_text(str(superlink.pid), encoding="utf-8")
        run_id = None
        if cfg.submit and not args.no_run:
            run_id, digest = submit_run(cfg)
            print(
                f"submitted run {run_id} (flwr run, app staged in {cfg.workdir / 'app'})",
                file=out,
                flush=True,
            )
            _print_fab_hash(digest, out)
        if args.exit_after_run and run_id is not None:
            state = wait_for_run(cfg, run_id, timeout_s=args.run_timeout, alive=superlink.running)
            print(f"run {run_id}: {state}", file=out, flush=True)
            return 0 if state.endswith("completed") else 1
        while superlink.running():
            time.sleep(0.5)
        print(f"SuperLink exited with {superlink.process.returncode}", file=out)
        return 1
    except _Stop:
        return 0
    finally:
        if superlink is not None:
            superlink.stop()
        (cfg.workdir / READY_FILE).unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_keys(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    signing, sealing = ensure_server_keys(load_server_config(args.config))
    print(f"ServerApp sealing key (give to every site as server_sealing.pub): {sealing}", file=out)
    print(f"ServerApp signing key (ledger heads; give to auditors): {signing}", file=out)
    return 0


def run_enroll(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cfg = load_server_config(args.config)
    node_id = enroll(cfg, args.site_pub, args.name, signing_pub=args.signing_pub)
    print(f"enrolled {args.site_pub} as node {node_id}", file=out)
    return 0


def run_status(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    report = status(load_server_config(args.config))
    if args.json:
        _print_json(report, out)
        return 0
    for run in report["runs"]:
        print(f"run {run.get('run-id')}: {run.get('status')} ({run.get('fab-name', '')})", file=out)
    latest = report["latest_run_folder"]
    if latest:
        done = "finished" if latest["finished"] else "in progress"
        print(f"latest run folder {latest['run_dir']}: round {latest['round']} ({done})", file=out)
    print(f"enrolled sites: {len(report['enrolled'])}", file=out)
    for node in report["enrolled"]:
        print(f"  node {node.get('node-id')} {node.get('name', '')} {node.get('status')}", file=out)
    print(f"connected sites: {len(report['connected'])}", file=out)
    return 0


def _print_fab_hash(digest: str, out: TextIO) -> None:
    print(f"FAB sha256 {digest}", file=out)
    print(
        "  each site serves the run only once its admin approved this hash "
        f"(compare it out of band): fedsafe site approve --config site.yaml --hash {digest}",
        file=out,
        flush=True,
    )


def _warn_control_api(cfg: ServerDeployConfig, out: TextIO) -> None:
    if not cfg.control_api_is_loopback:
        print(
            f"WARNING: the Control API (where runs are submitted) listens on {cfg.control_api}, "
            "beyond this host (control_api_remote: true); anyone who reaches it and trusts "
            "the CA can try to submit runs. Prefer loopback and an SSH tunnel.",
            file=out,
            flush=True,
        )


def run_submit(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cfg = _config(args, out)
    run_id, digest = submit_run(cfg)
    print(f"submitted run {run_id}", file=out)
    _print_fab_hash(digest, out)
    return 0


def run_fab_hash(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    digest = staged_fab_hash(load_server_config(args.config))
    print(digest, file=out)
    return 0


def _add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a run after a crash from its last checkpoint (run_id + resume=true); "
        "sites re-send rounds they already trained, never training or paying twice",
    )
    parser.add_argument(
        "--run-id",
        default=None,
        help="with --resume: the run folder to continue (default: run.config.run_id, else "
        "the newest run folder with a checkpoint and no summary.json)",
    )


def add_server_parser(sub: Any) -> argparse.ArgumentParser:
    """`fedsafe server start|enroll|status|submit --config server.yaml`."""
    server: argparse.ArgumentParser = sub.add_parser(
        "server", help="coordinator: run the SuperLink, enrol sites, submit and watch runs"
    )
    server_sub = server.add_subparsers(dest="server_command", required=True)

    start = server_sub.add_parser("start", help="start the SuperLink (TLS, node auth) and the run")
    start.add_argument("--config", type=Path, required=True, help="server.yaml")
    start.add_argument("--no-run", action="store_true", help="start the SuperLink only")
    start.add_argument(
        "--exit-after-run", action="store_true", help="stop once the submitted run finishes"
    )
    start.add_argument("--start-timeout", type=float, default=60.0, help="seconds (default 60)")
    start.add_argument("--run-timeout", type=float, default=3600.0, help="seconds (default 3600)")
    _add_resume_arguments(start)
    start.set_defaults(func=run_start)

    keys_p = server_sub.add_parser(
        "keys", help="create the ServerApp's signing and sealing keys (sites pin sealing.pub)"
    )
    keys_p.add_argument("--config", type=Path, required=True, help="server.yaml")
    keys_p.set_defaults(func=run_keys)

    enroll_p = server_sub.add_parser("enroll", help="enrol a site's SuperNode public key")
    enroll_p.add_argument("--config", type=Path, required=True, help="server.yaml")
    enroll_p.add_argument("--site-pub", type=Path, required=True, help="the site's auth.pub")
    enroll_p.add_argument("--name", default=None, help="the site's name (as in its site.yaml)")
    enroll_p.add_argument(
        "--signing-pub", type=Path, default=None, help="the site's signing.pub (needs --name)"
    )
    enroll_p.set_defaults(func=run_enroll)

    status_p = server_sub.add_parser("status", help="runs, round, enrolled and connected sites")
    status_p.add_argument("--config", type=Path, required=True, help="server.yaml")
    status_p.add_argument("--json", action="store_true", help="print JSON")
    status_p.set_defaults(func=run_status)

    submit = server_sub.add_parser(
        "submit", help="submit the configured run to a running SuperLink"
    )
    submit.add_argument("--config", type=Path, required=True, help="server.yaml")
    _add_resume_arguments(submit)
    submit.set_defaults(func=run_submit)

    fab = server_sub.add_parser(
        "fab-hash", help="print the SHA-256 of the FAB `submit` would send (sites approve it)"
    )
    fab.add_argument("--config", type=Path, required=True, help="server.yaml")
    fab.set_defaults(func=run_fab_hash)
    return server
