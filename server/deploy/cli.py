"""`fedsafe server start|submit|fab-hash|...`: TLS SuperLink, node auth, `flwr run`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from fedsafe.server.access.cli import add_admin_parser
from fedsafe.server.access.deploy import flower_submit, start_admin_endpoint
from fedsafe.server.access.options import add_admin_arguments, admin_client
from fedsafe.server.deploy.config import ServerDeployConfig, load_server_config
from fedsafe.server.deploy.flower import (
    staged_fab_hash,
    submit_run,
)
from fedsafe.server.deploy.process import (
    DeployError,
)
from fedsafe.server.deploy.resume import refuse_restart, resume_target, with_resume
from fedsafe.server.deploy.superlink import (
    ALREADY_ENROLLED,
    READY_FILE,
    enroll,
    ensure_server_keys,
    file_signing_key,
    start_superlink,
    status,
    wait_for_run,
)
from fedsafe.server.monitor.watch import latest_state_file, watch

__all__ = [
    "add_server_parser",
    "run_start",
    "run_keys",
    "run_enroll",
    "run_status",
    "run_submit",
    "run_fab_hash",
]


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
    superlink = admin = None
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
                if ALREADY_ENROLLED not in str(err):
                    raise
                if site.signing_pub is not None:
                    file_signing_key(cfg, site.name, site.signing_pub)
                print(f"{site.name}: already enrolled (state kept on disk)", file=out, flush=True)
        admin = start_admin_endpoint(cfg, submit=flower_submit(cfg))  # None without access:
        if admin is not None:
            print(f"admin endpoint (mTLS) on {':'.join(map(str, admin.address))}", file=out)
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
        if admin is not None:
            admin.stop()
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
    if getattr(args, "watch", False):
        return _watch(args, out)
    if args.config is None:
        raise DeployError("status needs --config server.yaml (only --watch takes --run-dir)")
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


def _watch(args: argparse.Namespace, out: TextIO) -> int:
    """The live run state the coordinator's monitor writes (monitoring.enabled: true)."""
    if args.run_dir is None and args.config is None:
        raise DeployError("status --watch needs --config server.yaml or --run-dir RUN_FOLDER")
    runs_dir = load_server_config(args.config).runs_dir if args.run_dir is None else None

    def find() -> Path:
        return latest_state_file(run_dir=args.run_dir, runs_dir=runs_dir)

    count, interval = args.count, args.interval
    return watch(find, interval_s=interval, count=count, out=out, as_json=args.json)


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
    client = admin_client(args)
    if client is not None:  # through the admin endpoint: the coordinator checks the role
        answer = client.submit(resume=args.resume, run_id=args.run_id)
        run_id, digest = answer["run_id"], answer["fab_sha256"]
    else:
        if args.config is None:
            raise DeployError("give --config server.yaml, or --admin HOST:PORT with a certificate")
        run_id, digest = submit_run(_config(args, out))
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
    status_p.add_argument("--config", type=Path, default=None, help="server.yaml")
    status_p.add_argument("--json", action="store_true", help="print JSON")
    status_p.add_argument(
        "--watch", action="store_true", help="re-print the live run state (monitor.json)"
    )
    status_p.add_argument("--run-dir", type=Path, default=None, help="with --watch: run folder")
    status_p.add_argument("--interval", type=float, default=2.0, help="--watch seconds (2)")
    status_p.add_argument("--count", type=int, default=None, help="--watch: stop after N looks")
    status_p.set_defaults(func=run_status)

    submit = server_sub.add_parser(
        "submit", help="submit the configured run to a running SuperLink"
    )
    submit.add_argument("--config", type=Path, default=None, help="server.yaml (local submit)")
    _add_resume_arguments(submit)
    add_admin_arguments(submit)
    submit.set_defaults(func=run_submit)

    add_admin_parser(server_sub)
    fab = server_sub.add_parser(
        "fab-hash", help="print the SHA-256 of the FAB `submit` would send (sites approve it)"
    )
    fab.add_argument("--config", type=Path, required=True, help="server.yaml")
    fab.set_defaults(func=run_fab_hash)
    return server
