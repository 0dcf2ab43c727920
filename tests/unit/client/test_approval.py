"""approved_code in site.yaml, `fedsafe site approve|status`, the Flower pin and the supervisor."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from fedsafe.client.approval import (
    ApprovedCode,
    add_approval,
    approve_command,
    check_hash,
    parse_approved,
)
from fedsafe.client.deploy import run_start, supernode_env
from fedsafe.client.site_admin import run_approve
from fedsafe.client.site_config import load_site_config
from fedsafe.client.site_kit import init_site_kit
from fedsafe.client.supervise import Supervisor, write_secret
from fedsafe.client.worker import FLOWER_VERSION, SiteWorker, check_flower_version
from fedsafe.common.crypto.pki import init_ca, init_server_sealing_key
from fedsafe.common.errors import ConfigError, FedsafeError
from fedsafe.server.deploy.process import free_port
from fedsafe.simulations.cli import main

HASH = "ab" * 32
SCHEMA = (
    "target: {column: y, positive: [yes], negative: [no]}\nmissing: error\ncolumns:\n  x: numeric\n"
)


@pytest.fixture
def kit(tmp_path: Path) -> Path:
    made = init_site_kit(
        "clinic-1",
        tmp_path / "kit",
        superlink="127.0.0.1:9092",
        ca_cert=init_ca(tmp_path / "ca", "CA").cert,
        server_sealing_pub=init_server_sealing_key(tmp_path / "srv")[1],
    )
    (made.directory / "schema.yaml").write_text(SCHEMA)
    rows = [f"{i},{'yes' if i % 2 else 'no'}" for i in range(12)]
    (made.directory / "data.csv").write_text("x,y\n" + "\n".join(rows) + "\n")
    return made.site_yaml


def test_the_worker_is_pinned_to_the_flower_release_it_was_written_against() -> None:
    import flwr

    assert flwr.__version__ == FLOWER_VERSION, (
        f"Flower {flwr.__version__} is installed but client/worker.py uses Flower "
        f"{FLOWER_VERSION}'s Runtime API internals: re-check them, then move the pin"
    )
    check_flower_version()
    with pytest.raises(FedsafeError, match="written against Flower 1.39.0.*1.40.0 is installed"):
        check_flower_version("1.40.0")
    with pytest.raises(FedsafeError):
        check_flower_version("1.39.1")


def test_approved_code_entries_are_checked_and_named_by_index() -> None:
    code = parse_approved([HASH, HASH.upper(), "fedsafe==0.1.0"], source="s.yaml")
    assert code == ApprovedCode((HASH,), ("0.1.0",))
    assert code.allows(HASH, "other/app", "9")
    assert code.allows("cd" * 32, "fedsafe/fedsafe", "0.1.0")
    assert not code.allows("cd" * 32, "evil/fedsafe", "0.1.0")
    assert not code.allows("cd" * 32, "fedsafe/fedsafe", "0.2.0")
    assert not parse_approved(None, source="s").allows(HASH, "fedsafe/fedsafe", "0.1.0")
    for bad, key in ((["abc"], "approved_code[0]"), ([HASH, 7], "approved_code[1]")):
        with pytest.raises(ConfigError, match=re.escape(f"'{key}' (from s.yaml)")):
            parse_approved(bad, source="s.yaml")
    with pytest.raises(ConfigError, match="'approved_code'"):
        parse_approved(HASH, source="s.yaml")
    with pytest.raises(ConfigError, match="64 hex digits"):
        check_hash("g" * 64)
    assert approve_command(Path("/k/site.yaml"), HASH) == (
        f"fedsafe site approve --config /k/site.yaml --hash {HASH}"
    )


def test_site_yaml_with_a_bad_approved_entry_is_refused_at_load(kit: Path) -> None:
    kit.write_text(kit.read_text() + "approved_code: [not-a-hash]\n")
    with pytest.raises(ConfigError, match=r"approved_code\[0\]"):
        load_site_config(kit)


def test_approve_adds_the_hash_and_keeps_the_rest_of_the_file(kit: Path) -> None:
    before = kit.read_text()
    fab = kit.parent / "run.fab"
    fab.write_bytes(b"a FAB's bytes")
    out = io.StringIO()

    run_approve(argparse.Namespace(config=kit, fab=fab, hash=None), out=out)
    run_approve(argparse.Namespace(config=kit, fab=None, hash=HASH.upper()), out=out)
    run_approve(argparse.Namespace(config=kit, fab=None, hash=HASH), out=out)  # idempotent

    digest = hashlib.sha256(b"a FAB's bytes").hexdigest()
    after = kit.read_text()
    assert after.startswith(before.rstrip("\n"))  # every comment and key kept, in place
    assert load_site_config(kit).approved_code.hashes == (digest, HASH)
    assert f"approved FAB sha256 {digest}" in out.getvalue()
    with pytest.raises(ConfigError, match="64 hex digits"):
        run_approve(argparse.Namespace(config=kit, fab=None, hash="12ab"), out=out)
    assert kit.read_text() == after  # a refused approval changes nothing
    # an existing list is extended where it stands, comments after it kept
    kit.write_text(before + f"approved_code:\n  - {'cd' * 32}\n# trailing note\n")
    add_approval(kit, [HASH])
    text = kit.read_text()
    assert "# trailing note" in text
    assert yaml.safe_load(text)["approved_code"] == ["cd" * 32, HASH]


def test_site_approve_and_status_commands(kit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["site", "approve", "--config", str(kit), "--hash", HASH]) == 0
    assert f"approved FAB sha256 {HASH}" in capsys.readouterr().out
    assert main(["site", "status", "--config", str(kit), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["site"], status["approved_code"], status["budget"]) == ("clinic-1", [HASH], [])
    assert main(["site", "status", "--config", str(kit)]) == 0
    assert HASH in capsys.readouterr().out
    assert main(["site", "approve", "--config", str(kit), "--hash", "xyz"]) == 2
    assert "--hash" in capsys.readouterr().err


def test_site_start_dry_run_shows_the_supervised_pair(kit: Path) -> None:
    out = io.StringIO()
    args = argparse.Namespace(
        config=kit, dry_run=True, isolation="process", max_retries=None, max_wait_time=None
    )
    assert run_start(args, out=out) == 0
    text = out.getvalue()
    assert "approved code: none (every run is refused)" in text
    supernode, worker = text.strip().splitlines()[-2:]
    assert "--isolation process" in supernode and "--superexec-auth-secret-file" in supernode
    assert "--host 127.0.0.1" in supernode
    assert " -P -m fedsafe.client.worker " in worker and "--secret-file" in worker
    assert "--runtime-dependency-install" not in supernode
    env = supernode_env(load_site_config(kit))  # the SuperNode's and the worker's environment
    assert (
        env["FLWR_TELEMETRY_ENABLED"],
        env["FLWR_DISABLE_UPDATE_CHECK"],
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"],
    ) == ("0", "1", "1")


def test_the_secret_is_fresh_and_0600(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "home" / "superexec.secret")
    first = path.read_bytes()
    assert len(first) == 64 and (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert write_secret(path).read_bytes() != first


def test_the_worker_dials_only_loopback(kit: Path) -> None:
    with pytest.raises(FedsafeError, match="loopback only"):
        SiteWorker(kit, "10.0.0.2:9094", b"secret")


def _listener(port: int) -> list[str]:
    """A real process with a loopback port open, standing where the Runtime API would be."""
    code = (
        "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])));"
        "s.listen(); time.sleep(60)"
    )
    return [sys.executable, "-c", code, str(port)]


def test_supervisor_restarts_a_dying_worker_with_backoff_then_gives_up() -> None:
    port = free_port()
    out = io.StringIO()
    sup = Supervisor(
        _listener(port),
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        dict(os.environ),
        f"127.0.0.1:{port}",
        out,
        backoff_s=(0.05, 0.1),
    )
    assert sup.run() == 1
    text = out.getvalue()
    assert "exited with 3" in text and "restart 1 in 0.05 s" in text
    assert "restart 2 in 0.1 s" in text and "restart 3 in 0.1 s" in text  # bounded
    assert "giving up" in text
    assert not _alive(_pids(text))  # the stand-in SuperNode was stopped too


def test_sigterm_stops_the_worker_and_the_supernode() -> None:
    port = free_port()
    out = io.StringIO()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    sup = Supervisor(_listener(port), sleeper, dict(os.environ), f"127.0.0.1:{port}", out)

    def sigterm_once_the_worker_runs() -> None:
        deadline = time.monotonic() + 30
        while "site worker pid" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=sigterm_once_the_worker_runs, daemon=True).start()
    assert sup.run() == 0
    text = out.getvalue()
    assert "stopping: site worker, then SuperNode" in text
    pids = _pids(text)
    assert len(pids) == 2 and not _alive(pids)


def _pids(text: str) -> list[int]:
    return [int(part.split()[0].rstrip(";")) for part in text.split(" pid ")[1:]]


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in set(pids):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def test_a_long_lived_worker_reads_the_data_once_and_again_when_it_changes(kit: Path) -> None:
    from fedsafe.client.site import deployed_site
    from fedsafe.common.config import ExperimentConfig

    cfg = ExperimentConfig()
    first = deployed_site(kit, cfg)
    assert deployed_site(kit, cfg).data is first.data  # held, not re-read per message
    data = kit.parent / "data.csv"
    data.write_text(data.read_text() + "99,yes\n")
    again = deployed_site(kit, cfg)
    assert again.data is not first.data
    assert len(again.data.y_train) + len(again.data.y_test) == 13


def test_a_worker_told_to_stop_while_starting_exits_at_once(kit: Path, tmp_path: Path) -> None:
    import subprocess

    secret = write_secret(tmp_path / "home" / "superexec.secret")
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-P", "-m", "fedsafe.client.worker", "--config", str(kit),
               "--runtime-api", address, "--secret-file", str(secret)]  # fmt: skip
    worker = subprocess.Popen(command, env=dict(os.environ))
    time.sleep(1.0)  # importing torch and the ClientApp, or already polling a closed port
    worker.send_signal(signal.SIGTERM)
    try:
        assert worker.wait(timeout=15) == 0
    finally:
        worker.kill()


def test_site_status_checks_the_store_against_the_sites_signed_head(
    kit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    from fedsafe.client.budget import BudgetStore, StoreAnchor
    from fedsafe.client.policy import SitePolicy
    from fedsafe.common.privacy.accountants import Charge

    cfg = load_site_config(kit)
    with BudgetStore.open(cfg.budget_store, anchor=StoreAnchor.from_keys_dir(cfg.keys_dir)) as s:
        for rnd in (1, 2):
            s.reserve(
                dataset_id="d",
                run_id="r",
                round=rnd,
                charge=Charge(1.5, 0.05, 20),
                policy=SitePolicy(max_epsilon=50.0),
                purpose=None,
            )
    assert main(["site", "status", "--config", str(kit), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["budget"][0]["rounds"] == 2
    with sqlite3.connect(cfg.budget_store) as db:
        db.execute("DELETE FROM budget_charges WHERE id = 2")
    assert main(["site", "status", "--config", str(kit), "--json"]) == 2
    assert "changed outside fedsafe" in capsys.readouterr().err
