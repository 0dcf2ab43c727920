"""A throw-away 3-hospital deployment for the bench: CA, certificates, site kits, server.yaml."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedsafe.client.approval import add_approval
from fedsafe.client.site_kit import init_site_kit
from fedsafe.common.crypto.pki import (
    init_ca,
    init_server_sealing_key,
    init_server_signing_key,
    issue_server_certificate,
)
from fedsafe.server.deploy.config import load_server_config
from fedsafe.server.deploy.flower import staged_fab_hash
from fedsafe.server.deploy.process import free_ports

__all__ = ["Deployment", "make_deployment", "HOSPITALS"]

HOSPITALS = {"site-a": "cleveland", "site-b": "hungary", "site-c": "va_long_beach"}
PURPOSE = "cardiology-research"


@dataclass(frozen=True)
class Deployment:
    root: Path
    server_yaml: Path
    workdir: Path
    site_yaml: dict[str, Path]
    fab_hash: str


def _write_heart_site(kit: Path, hospital: str) -> None:
    from fedsafe.common.data.heart import HEART_SCHEMA, HEART_SITES, heart_disease_frame

    lines = ["version: 1", "missing: impute", "columns:"]
    lines += [f"  {c}: numeric" for c in HEART_SCHEMA.numeric]
    for column, levels in HEART_SCHEMA.categorical:
        quoted = ", ".join(f'"{level}"' for level in levels)
        lines.append(f"  {column}: {{type: categorical, levels: [{quoted}]}}")
    lines += ["target:", "  column: num", "  positive: [1, 2, 3, 4]", "  negative: [0]"]
    (kit / "schema.yaml").write_text("\n".join(lines) + "\n")
    frame = heart_disease_frame()
    columns = [*HEART_SCHEMA.numeric, *(c for c, _ in HEART_SCHEMA.categorical), "num"]
    frame[frame["dataset"] == HEART_SITES[hospital]][columns].to_csv(kit / "data.csv", index=False)


def _grant(registry: Path, site: str, key: Path) -> None:
    from fedsafe.simulations.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(
            [
                "consent", "grant", "--registry", str(registry), "--site", site,
                "--site-key", str(key), "--dataset", "site_files", "--purpose", PURPOSE,
                "--legal-basis", "GDPR Art. 6(1)(e) + 9(2)(j)", "--category", "health",
                "--jurisdiction", "EU",
            ]
        )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"consent grant for {site} failed ({code})")


def make_deployment(root: Path, *, rounds: int) -> Deployment:
    """Fresh kits (fresh budget stores), consent granted, the run's FAB approved at every site."""
    root.mkdir(parents=True, exist_ok=True)
    init_ca(root / "ca", "fedsafe bench CA")
    issue_server_certificate(root / "ca", root / "server", hosts=["127.0.0.1", "localhost"])
    init_server_signing_key(root / "server-keys")
    _, sealing = init_server_sealing_key(root / "server-keys")
    fleet_port, control_port = free_ports(2)
    fleet = f"127.0.0.1:{fleet_port}"
    site_yaml = {}
    for site, hospital in HOSPITALS.items():
        kit = init_site_kit(
            site, root / site, superlink=fleet, ca_cert=root / "ca" / "ca.pem",
            server_sealing_pub=sealing,
        )  # fmt: skip
        _write_heart_site(kit.directory, hospital)
        site_yaml[site] = kit.site_yaml
    config = {
        "workdir": "coordinator",
        "tls": {
            "ca_cert": str(root / "ca" / "ca.pem"),
            "cert": str(root / "server" / "server.pem"),
            "key": str(root / "server" / "server.key"),
        },
        "fleet_api": fleet,
        "control_api": f"127.0.0.1:{control_port}",
        "run": {
            "submit": True,
            "config": {
                "experiment.name": "bench-deploy",
                "dataset.name": "site_files",
                "dataset.schema": str(root / "site-a" / "schema.yaml"),
                "training.rounds": rounds,
                "strategy.min_sites": 3,
                "strategy.round_timeout_s": 300.0,
                "compliance.roll_call_timeout_s": 300.0,
                "compliance.server_keys_dir": str(root / "server-keys"),
            },
        },
        "sites": [
            {
                "name": s,
                "auth_pub": str(root / s / "auth.pub"),
                "signing_pub": str(root / s / "signing.pub"),
            }
            for s in HOSPITALS
        ],
    }
    server_yaml = root / "server.yaml"
    server_yaml.write_text(yaml.safe_dump(config))
    workdir = root / "coordinator"
    workdir.mkdir()
    for site in HOSPITALS:
        _grant(workdir / "consent.sqlite", site, root / site / "signing.key")
    digest = staged_fab_hash(load_server_config(server_yaml))
    for path in site_yaml.values():
        add_approval(path, [digest])
    return Deployment(root, server_yaml, workdir, site_yaml, digest)
