"""Coordinator deployment: server.yaml checks, the SuperLink command, the staged app, status."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import tomllib
from argparse import Namespace
from pathlib import Path

import pytest
import yaml

from fedsafe.common.crypto.pki import init_ca, init_site_keys, issue_server_certificate
from fedsafe.common.errors import ConfigError
from fedsafe.server.deploy.certs import run_certs_init, run_certs_server
from fedsafe.server.deploy.cli import run_start
from fedsafe.server.deploy.config import load_server_config
from fedsafe.server.deploy.flower import (
    fab_hash,
    project_root,
    stage_app,
    staged_fab_hash,
    write_connection,
    write_run_config,
)
from fedsafe.server.deploy.process import (
    DeployError,
    ManagedProcess,
    descendants,
    flower_env,
    wait_for_port,
)
from fedsafe.server.deploy.superlink import latest_round, superlink_command


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("certs")
    init_ca(root / "ca", "test CA")
    issue_server_certificate(root / "ca", root / "server", hosts=["127.0.0.1"])
    init_site_keys(root / "site-a", "site-a")
    return root


def _server_yaml(tmp_path: Path, certs: Path, **changes: object) -> Path:
    data: dict[str, object] = {
        "workdir": "coord",
        "tls": {
            "ca_cert": str(certs / "ca" / "ca.pem"),
            "cert": str(certs / "server" / "server.pem"),
            "key": str(certs / "server" / "server.key"),
        },
        "fleet_api": "127.0.0.1:29092",
        "control_api": "127.0.0.1:29093",
        "run": {
            "config": {
                "experiment.name": "t",
                "dataset.name": "site_files",
                "dataset.schema": "schema.yaml",
                "training.rounds": 2,
            }
        },
        "sites": [
            {
                "name": "site-a",
                "auth_pub": str(certs / "site-a" / "auth.pub"),
                "signing_pub": str(certs / "site-a" / "signing.pub"),
            }
        ],
    }
    data.update(changes)
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_server_config_resolves_paths_and_fills_deployment_defaults(
    tmp_path: Path, certs: Path
) -> None:
    cfg = load_server_config(_server_yaml(tmp_path, certs))

    assert cfg.workdir == (tmp_path / "coord").resolve()
    assert cfg.run_overrides["dataset.schema"] == str((tmp_path / "schema.yaml").resolve())
    assert cfg.run_overrides["runs_dir"] == str(cfg.workdir / "runs")
    assert cfg.run_overrides["dataset.files"] == "site-a"  # one name per enrolled site
    assert cfg.run_overrides["compliance.site_keys_dir"] == str(cfg.workdir / "site-keys")
    assert cfg.experiment().training.rounds == 2
    assert cfg.database == cfg.workdir / "superlink.db"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"fleet_ap": "x"}, "fleet_ap"),
        ({"fleet_api": "nowhere"}, "fleet_api"),
        ({"control_api": "127.0.0.1:29092"}, "control_api"),
        ({"tls": {"ca_cert": "missing.pem", "cert": "a", "key": "b"}}, "tls.ca_cert"),
        ({"run": {"config": {"training.roundz": 2}}}, "training.roundz"),
        ({"run": {"config": {"training.rounds": 0}}}, "training.rounds"),
        ({"run": {"submit": "yes"}}, "run.submit"),
        ({"sites": [{"name": "a", "auth_pub": "missing.pub"}]}, "sites[0].auth_pub"),
    ],
)
def test_bad_server_yaml_names_the_key_and_file(
    tmp_path: Path, certs: Path, changes: dict[str, object], key: str
) -> None:
    path = _server_yaml(tmp_path, certs, **changes)

    with pytest.raises(ConfigError) as info:
        load_server_config(path)

    assert info.value.key == key
    assert str(path.resolve()) in str(info.value.source)


def test_superlink_command_enables_tls_node_auth_and_disk_state(
    tmp_path: Path, certs: Path
) -> None:
    cfg = load_server_config(_server_yaml(tmp_path, certs))

    command = superlink_command(cfg)

    def value(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert "--enable-supernode-auth" in command and "--insecure" not in command
    assert value("--ssl-ca-certfile") == str(cfg.ca_cert)
    assert value("--ssl-certfile") == str(cfg.cert)
    assert value("--ssl-keyfile") == str(cfg.key)
    assert value("--database") == str(cfg.database)
    assert value("--fleet-api-address") == "127.0.0.1:29092"
    assert (value("--host"), value("--port")) == ("127.0.0.1", "29093")
    assert value("--fleet-api-type") == "grpc-rere"


def test_connection_config_points_flwr_at_the_control_api_with_the_ca(
    tmp_path: Path, certs: Path
) -> None:
    cfg = load_server_config(
        _server_yaml(tmp_path, certs, control_api="0.0.0.0:29093", control_api_remote=True)
    )

    doc = tomllib.loads(write_connection(cfg).read_text())

    assert doc["superlink"]["default"] == "fedsafe"
    assert doc["superlink"]["fedsafe"] == {
        "address": "127.0.0.1:29093",
        "root-certificates": str(cfg.ca_cert),
    }
    assert flower_env(cfg.flwr_home)["FLWR_HOME"] == str(cfg.flwr_home)
    assert flower_env(cfg.flwr_home)["FLWR_TELEMETRY_ENABLED"] == "0"


def test_staged_app_declares_overrides_and_leaves_the_source_untouched(
    tmp_path: Path, certs: Path
) -> None:
    cfg = load_server_config(_server_yaml(tmp_path, certs))
    source = project_root() / "pyproject.toml"
    before = source.read_bytes()

    app = stage_app(cfg)
    run_config = tomllib.loads(write_run_config(cfg).read_text())

    project = tomllib.loads((app / "pyproject.toml").read_text())
    assert source.read_bytes() == before
    assert "federations" not in project["tool"]["flwr"]
    assert project["tool"]["flwr"]["app"]["components"]["clientapp"] == "fedsafe.client.app:app"
    assert set(run_config) <= set(project["tool"]["flwr"]["app"]["config"])
    assert (app / "client" / "app.py").is_file() and (app / "server" / "app.py").is_file()
    assert not (app / "tests").exists() and not list(app.rglob("__pycache__"))


def test_latest_round_reads_the_newest_metrics_file(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r-1"
    run.mkdir(parents=True)
    lines = [
        {"round": 1, "site": "a", "phase": "train"},
        {"round": 1, "phase": "global"},
        {"round": 2, "site": "b", "phase": "train"},
        {"round": 2, "phase": "global"},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{partial")

    latest = latest_round(tmp_path / "runs")

    assert latest == {"run_dir": str(run), "round": 2, "sites": ["a", "b"], "finished": False}
    assert latest_round(tmp_path / "none") is None


def test_certs_commands_create_ca_then_issue_and_renew(tmp_path: Path) -> None:
    out = io.StringIO()
    ca = tmp_path / "ca"
    run_certs_init(Namespace(dir=ca, name="CA", valid_days=30), out=out)
    args = Namespace(
        ca_dir=ca, out=tmp_path / "srv", host=["127.0.0.1", "localhost"], valid_days=10
    )

    run_certs_server(args, out=out)
    first = (tmp_path / "srv" / "server.pem").read_bytes()
    run_certs_server(args, out=out)

    assert (tmp_path / "srv" / "server.pem").read_bytes() != first
    assert "127.0.0.1, localhost" in out.getvalue()


def test_managed_process_stops_its_whole_tree(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    proc = ManagedProcess(
        "tree", [sys.executable, "-c", script], env={}, cwd=tmp_path, log_path=tmp_path / "log"
    )
    deadline = time.monotonic() + 10
    while not descendants(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = descendants(proc.pid)[0]

    proc.stop(timeout_s=5)

    assert not proc.running()
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(child, 0)
            time.sleep(0.1)


def test_wait_for_port_fails_fast_when_the_process_exits(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)

    with pytest.raises(DeployError, match="exited"):
        wait_for_port("127.0.0.1:1", timeout_s=5, process=proc)


def test_control_api_beyond_loopback_is_an_explicit_setting_with_a_warning(
    tmp_path: Path, certs: Path
) -> None:
    assert load_server_config(_server_yaml(tmp_path, certs)).control_api_is_loopback
    with pytest.raises(ConfigError, match="control_api_remote: true"):
        load_server_config(_server_yaml(tmp_path, certs, control_api="0.0.0.0:29093"))
    with pytest.raises(ConfigError, match="control_api_remote"):
        load_server_config(
            _server_yaml(tmp_path, certs, control_api="10.0.0.5:29093", control_api_remote="yes")
        )
    remote = load_server_config(
        _server_yaml(tmp_path, certs, control_api="10.0.0.5:29093", control_api_remote=True)
    )
    assert not remote.control_api_is_loopback
    # the warning comes before any process: the SuperLink then fails to bind 10.0.0.5 here
    out = io.StringIO()
    args = Namespace(
        config=remote.path, resume=False, run_id=None, no_run=True, exit_after_run=False,
        start_timeout=5.0, run_timeout=5.0,
    )  # fmt: skip
    with pytest.raises(DeployError):
        run_start(args, out=out)
    assert "WARNING: the Control API" in out.getvalue() and "10.0.0.5:29093" in out.getvalue()


def test_the_fab_hash_is_the_bytes_flwr_builds_and_ignores_paths_and_ports(
    tmp_path: Path, certs: Path
) -> None:
    from flwr.cli.build import build_fab_from_disk

    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    one = load_server_config(_server_yaml(tmp_path / "one", certs))
    other = load_server_config(_server_yaml(tmp_path / "two", certs, fleet_api="127.0.0.1:29192"))

    digest = staged_fab_hash(one)

    assert not one.workdir.exists()  # computed in a scratch folder
    assert len(digest) == 64 and digest == fab_hash(stage_app(one))
    assert build_fab_from_disk(one.workdir / "app") == build_fab_from_disk(one.workdir / "app")
    assert staged_fab_hash(other) == digest  # other workdir, ports and paths: same code
    (one.workdir / "app" / "client" / "app.py").write_text("# a modified client\n")
    assert fab_hash(one.workdir / "app") != digest
