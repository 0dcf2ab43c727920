"""The coordinator's side of Flower's own CLI: connection config, staged app, `flwr` calls."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from fedsafe.server.deploy.config import ServerDeployConfig
from fedsafe.server.deploy.process import DeployError, flower_bin, flower_env

__all__ = [
    "CONNECTION",
    "APP_PACKAGES",
    "project_root",
    "write_connection",
    "stage_app",
    "write_run_config",
    "flwr_json",
    "register_site",
    "list_nodes",
    "list_runs",
    "submit_run",
    "fab_hash",
    "staged_fab_hash",
]

CONNECTION = "fedsafe"  # the SuperLink connection name in FLWR_HOME/config.toml
APP_PACKAGES = ("common", "server", "client")  # what the ServerApp and ClientApp import
_APP_SUFFIXES = (".py", ".yaml", ".yml")
# Declared in every staged app with their defaults, so `--resume` (which sets them) submits
# the same FAB, and so the same hash, as the run it continues.
_ALWAYS_DECLARED: dict[str, Any] = {"run_id": "null", "resume": False}


def project_root() -> Path:
    """The fedsafe project folder (the one with `[tool.flwr.app]` in pyproject.toml)."""
    return Path(__file__).resolve().parents[2]


def write_connection(cfg: ServerDeployConfig) -> Path:
    """FLWR_HOME/config.toml naming this SuperLink's Control API and the CA to trust.

    Flower 1.39 reads SuperLink connections from FLWR_HOME/config.toml only; giving the
    coordinator its own FLWR_HOME keeps a user's ~/.flwr untouched.
    """
    cfg.flwr_home.mkdir(parents=True, exist_ok=True)
    path = cfg.flwr_home / "config.toml"
    doc = {
        "superlink": {
            "default": CONNECTION,
            CONNECTION: {
                "address": cfg.control_client_address,
                "root-certificates": str(cfg.ca_cert),
            },
        }
    }
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def stage_app(cfg: ServerDeployConfig, dest: Path | None = None) -> Path:
    """Copy the Flower app into the coordinator folder, ready for `flwr run`.

    `flwr run` on a project whose pyproject.toml still has `[tool.flwr.federations]`
    migrates it and rewrites that file; the staged copy drops the section so no source
    file is ever modified. Flower refuses a `--run-config` key the app does not declare,
    so the staged app also declares every key server.yaml overrides, with a placeholder
    value (the real one travels in `--run-config`): the FAB, and so the hash sites
    approve, then depends on the code and on which keys are set, not on paths or ports.
    """
    source = cfg.app or project_root()
    dest = dest or cfg.workdir / "app"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
    flwr = project.setdefault("tool", {}).setdefault("flwr", {})
    if "app" not in flwr or "components" not in flwr["app"]:
        raise DeployError(f"{source / 'pyproject.toml'}: no [tool.flwr.app.components] section")
    flwr.pop("federations", None)
    declared = {**_ALWAYS_DECLARED, **flwr["app"].get("config", {})}
    flwr["app"]["config"] = {**declared, **{k: "" for k in cfg.run_overrides if k not in declared}}
    if cfg.app is not None:  # a user's own app folder, as it is
        shutil.copytree(source, dest, dirs_exist_ok=True, ignore=_ignore_for_copy)
    else:  # fedsafe: only the packages the two apps import
        for package in APP_PACKAGES:
            for file in (source / package).rglob("*"):
                if file.suffix in _APP_SUFFIXES and "__pycache__" not in file.parts:
                    target = dest / file.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, target)
    (dest / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")
    return dest


def _ignore_for_copy(_folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n in (".venv", ".git", "__pycache__", "runs", ".flwr")]


def write_run_config(cfg: ServerDeployConfig) -> Path:
    """The run's overrides as a TOML file for `flwr run --run-config FILE`."""
    path = cfg.workdir / "run_config.toml"
    path.write_text(tomli_w.dumps(dict(cfg.run_overrides)), encoding="utf-8")
    return path


def flwr_json(cfg: ServerDeployConfig, *args: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """`flwr ARGS --format json` against this coordinator's SuperLink; DeployError on failure."""
    write_connection(cfg)  # always what server.yaml says now
    command = [flower_bin("flwr"), *args, "--format", "json"]
    try:
        done = subprocess.run(
            command,
            env=flower_env(cfg.flwr_home),
            cwd=cfg.workdir,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeployError(
            f"`flwr {' '.join(args)}` did not answer within {timeout_s:g} s"
        ) from None
    try:
        reply: dict[str, Any] = json.loads(done.stdout[done.stdout.find("{") :])
    except (json.JSONDecodeError, ValueError):
        reply = {"success": False, "error-message": (done.stderr or done.stdout).strip()}
    if done.returncode != 0 or not reply.get("success", False):
        message = reply.get("error-message") or (done.stderr or done.stdout).strip()
        raise DeployError(
            f"`flwr {' '.join(args)}` failed against {cfg.control_client_address}: {message}"
        )
    return reply


def register_site(cfg: ServerDeployConfig, auth_pub: Path, name: str | None = None) -> int:
    """Enrol a SuperNode public key (`flwr supernode register`); returns its node id."""
    args = ["supernode", "register", str(Path(auth_pub).resolve()), CONNECTION]
    if name:
        args += ["--name", name]
    reply = flwr_json(cfg, *args)
    return int(reply["node-id"])


def list_nodes(cfg: ServerDeployConfig) -> list[dict[str, Any]]:
    """Enrolled SuperNodes with their status (registered, online, offline)."""
    return list(flwr_json(cfg, "supernode", "list", CONNECTION, "--verbose").get("nodes", []))


def list_runs(cfg: ServerDeployConfig, run_id: int | None = None) -> list[dict[str, Any]]:
    """Runs on this SuperLink (`flwr ls`), newest last."""
    args = ["ls", CONNECTION] + (["--run-id", str(run_id)] if run_id is not None else [])
    return list(flwr_json(cfg, *args).get("runs", []))


def fab_hash(app: Path) -> str:
    """SHA-256 of the FAB `flwr run` builds from `app` (Flower's own builder is deterministic)."""
    from flwr.cli.build import build_fab_from_disk

    return hashlib.sha256(build_fab_from_disk(app)).hexdigest()


def staged_fab_hash(cfg: ServerDeployConfig) -> str:
    """The hash of the FAB this server.yaml submits, without submitting it (sites approve it).

    Staged in a scratch folder: nothing is written to the coordinator's workdir.
    """
    with tempfile.TemporaryDirectory(prefix="fedsafe-fab-") as scratch:
        return fab_hash(stage_app(cfg, Path(scratch) / "app"))


def submit_run(cfg: ServerDeployConfig) -> tuple[int, str]:
    """Stage the app, submit it with `flwr run APP fedsafe --run-config FILE`: (run id, FAB hash).

    The hash is computed here from the same staged folder and checked against the prefix
    `flwr run` reports, so what is printed is what the sites receive.
    """
    app = stage_app(cfg)
    digest = fab_hash(app)
    run_config = write_run_config(cfg)
    reply = flwr_json(cfg, "run", str(app), CONNECTION, "--run-config", str(run_config))
    reported = str(reply.get("fab-hash", ""))
    if not reported or not digest.startswith(reported):
        raise DeployError(f"`flwr run` reports FAB hash {reported!r}, fedsafe computed {digest}")
    return int(reply["run-id"]), digest
