"""The CLI end to end: issue an operator certificate, serve server.yaml's access: section,
act through it with --admin, and verify the decisions ledger with `fedsafe audit verify`."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _access_pki import Pki, coordinator, fingerprint, pki  # noqa: F401 - fixtures

from fedsafe.server.access.client import AdminClient
from fedsafe.server.access.deploy import start_admin_endpoint
from fedsafe.server.access.endpoint import AdminEndpoint
from fedsafe.server.deploy.config import load_server_config
from fedsafe.simulations.cli import main


def test_certs_operator_prints_the_fingerprint_to_pin(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Act
    code = main(
        [
            "certs",
            "operator",
            "carol",
            "--ca-dir",
            str(pki.root / "ca"),
            "--out",
            str(tmp_path),
            "--role",
            "submit",
            "--role",
            "report",
        ]
    )

    # Assert
    printed = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "carol.key").stat().st_mode & 0o077 == 0
    from fedsafe.common.crypto.pki import OperatorCertFiles

    files = OperatorCertFiles("carol", tmp_path / "carol.key", tmp_path / "carol.pem", pki.ca_cert)
    assert f"fingerprint: {fingerprint(files)}" in printed
    assert f'submit: ["{fingerprint(files)}"]' in printed
    assert f'report: ["{fingerprint(files)}"]' in printed


def test_certs_operator_refuses_a_bad_name(pki: Pki, tmp_path: Path) -> None:
    assert (
        main(
            ["certs", "operator", "../x", "--ca-dir", str(pki.root / "ca"), "--out", str(tmp_path)]
        )
        == 2
    )


@pytest.fixture
def served(pki: Pki, tmp_path: Path) -> Iterator[tuple[Path, AdminEndpoint, list[bool]]]:
    """server.yaml with an access: section, its endpoint started on an OS-chosen port."""
    yaml = tmp_path / "server.yaml"
    yaml.write_text(
        f"""\
workdir: coordinator
tls: {{ca_cert: {pki.ca_cert}, cert: {pki.server_cert}, key: {pki.server_key}}}
access:
  listen: 127.0.0.1:0
  roles:
    submit: ["{fingerprint(pki.alice)}"]
    consent: ["CN=dpo-hospital-a"]
    report: ["CN=alice"]
""",
        encoding="utf-8",
    )
    cfg = load_server_config(yaml)
    (cfg.runs_dir / "run-1").mkdir(parents=True)
    (cfg.runs_dir / "run-1" / "summary.json").write_text("{}", encoding="utf-8")
    calls: list[bool] = []

    def submit(resume: bool, run_id: str | None) -> tuple[int | str, str]:
        calls.append(resume)
        return 42, "cd" * 32

    endpoint = start_admin_endpoint(cfg, submit=submit)
    assert endpoint is not None
    try:
        yield cfg.workdir, endpoint, calls
    finally:
        endpoint.stop()


def _admin(endpoint: AdminEndpoint, pki: Pki, who: str) -> list[str]:
    files = {"alice": pki.alice, "bob": pki.bob, "dpo": pki.dpo}[who]
    host, port = endpoint.address
    return [
        "--admin",
        f"{host}:{port}",
        "--ca-cert",
        str(pki.ca_cert),
        "--cert",
        str(files.cert),
        "--cert-key",
        str(files.key),
    ]


def test_cli_through_the_admin_endpoint(
    served: tuple[Path, AdminEndpoint, list[bool]],
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Arrange
    workdir, endpoint, calls = served
    site_key = pki.site_dir / "signing.key"
    (workdir / "site-keys").mkdir(parents=True)
    (workdir / "site-keys" / "hospital-a.pub").write_bytes(
        (pki.site_dir / "signing.pub").read_bytes()
    )
    grant = [
        "consent",
        "grant",
        "--site",
        "hospital-a",
        "--site-key",
        str(site_key),
        "--dataset",
        "heart",
        "--purpose",
        "cardiology",
        "--legal-basis",
        "GDPR 6(1)(e)",
        "--category",
        "health",
        "--jurisdiction",
        "EU",
        "--record-id",
        "c-7",
    ]

    # Act
    submitted = main(["server", "submit", *_admin(endpoint, pki, "alice")])
    submit_out = capsys.readouterr().out
    refused = main([*grant, *_admin(endpoint, pki, "bob")])
    refused_err = capsys.readouterr().err
    granted = main([*grant, *_admin(endpoint, pki, "dpo")])
    listed = main(["consent", "list", "--site", "hospital-a", *_admin(endpoint, pki, "dpo")])
    list_out = capsys.readouterr().out
    report = main(
        ["report", "run-1", "--out", str(tmp_path / "r.html"), *_admin(endpoint, pki, "alice")]
    )
    verified = main(
        [
            "audit",
            "verify",
            str(workdir / "access"),
            "--key",
            str(workdir / "keys" / "server_signing.pub"),
        ]
    )
    verify_out = capsys.readouterr().out

    # Assert
    assert submitted == 0 and "submitted run 42" in submit_out and calls == [False]
    assert refused == 2
    assert "CN=bob" in refused_err and "role 'consent'" in refused_err
    assert "Traceback" not in refused_err
    assert granted == 0 and listed == 0 and "c-7" in list_out
    assert report == 0 and (tmp_path / "r.html").is_file() and (tmp_path / "r.json").is_file()
    assert verified == 0 and re.search(r"ledger OK: \d+ entries", verify_out)


def test_admin_options_come_together(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    # Act: a certificate without --admin, and --admin without the key
    lone = main(["server", "submit", "--cert", str(pki.alice.cert)])
    partial = main(["server", "submit", "--admin", "127.0.0.1:1", "--cert", str(pki.alice.cert)])

    # Assert
    err = capsys.readouterr().err
    assert lone == 2 and partial == 2
    assert "--cert" in err and "--ca-cert" in err


def test_server_admin_serves_until_sigterm(pki: Pki, tmp_path: Path) -> None:
    # Arrange: a real `fedsafe server admin` process on an OS-chosen loopback port
    yaml = tmp_path / "server.yaml"
    yaml.write_text(
        f"""\
workdir: coordinator
tls: {{ca_cert: {pki.ca_cert}, cert: {pki.server_cert}, key: {pki.server_key}}}
access: {{listen: "127.0.0.1:0", roles: {{report: ["CN=alice"]}}}}
""",
        encoding="utf-8",
    )
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    command = [sys.executable, "-m", "fedsafe.simulations.cli", "server", "admin"]
    process = subprocess.Popen(
        [*command, "--config", str(yaml)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        address = None
        deadline = time.monotonic() + 60.0
        assert process.stdout is not None
        while address is None and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            line = process.stdout.readline() if ready else ""
            if found := re.search(r"admin endpoint on (\S+:\d+)", line):
                address = found.group(1)
            if process.poll() is not None:
                break
        assert address is not None, "the admin endpoint did not report its address"

        # Act
        runs = AdminClient.from_files(
            address, ca_cert=pki.ca_cert, cert=pki.alice.cert, key=pki.alice.key
        ).runs()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)

        # Assert
        assert runs == [] and code == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
