"""A federation PKI for access-control tests: the CA, the endpoint's certificate, operators
with and without roles, an expired operator, and a stranger with a self-made CA; and a live
admin endpoint over it. The fixtures at the end wrap them; test modules import them by name
(a conftest.py here would shadow tests/unit/server/conftest.py for `from conftest import`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fedsafe.common.crypto.certificates import certificate_fingerprint, pem_to_der
from fedsafe.common.crypto.pki import (
    OperatorCertFiles,
    init_ca,
    init_server_signing_key,
    init_site_keys,
    issue_operator_certificate,
    issue_server_certificate,
    load_signing_private_key,
    load_signing_public_key,
)
from fedsafe.server.access.actions import CoordinatorActions
from fedsafe.server.access.audit_log import AccessLog
from fedsafe.server.access.endpoint import AdminEndpoint, server_tls_context
from fedsafe.server.access.policy import parse_policy
from fedsafe.server.access.service import AccessService


@dataclass(frozen=True)
class Pki:
    root: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    alice: OperatorCertFiles  # roles submit + report (by fingerprint)
    dpo: OperatorCertFiles  # role consent (by CN)
    bob: OperatorCertFiles  # a federation certificate with no role
    expired: OperatorCertFiles  # alice's name, but out of date
    stranger: OperatorCertFiles  # CN=alice from a self-made CA
    signing_key: Path
    signing_pub: Path
    site_dir: Path  # hospital-a's signing.key / signing.pub


def fingerprint(files: OperatorCertFiles) -> str:
    return certificate_fingerprint(pem_to_der(files.cert.read_bytes()))


def build_pki(root: Path) -> Pki:
    ca = init_ca(root / "ca", "fedsafe federation CA")
    server = issue_server_certificate(root / "ca", root / "server", hosts=["127.0.0.1"])
    ops = root / "operators"
    alice = issue_operator_certificate(root / "ca", ops, "alice")
    dpo = issue_operator_certificate(root / "ca", ops, "dpo-hospital-a")
    bob = issue_operator_certificate(root / "ca", ops, "bob")
    past = datetime.now(UTC) - timedelta(days=30)
    expired = issue_operator_certificate(
        root / "ca", root / "expired", "alice", valid_days=2, now=past
    )
    init_ca(root / "rogue-ca", "fedsafe federation CA")  # same name, different key
    stranger = issue_operator_certificate(root / "rogue-ca", root / "stranger", "alice")
    signing_key, signing_pub = init_server_signing_key(root / "keys")
    site = init_site_keys(root / "hospital-a", "hospital-a")
    return Pki(
        root,
        ca.cert,
        server.cert,
        server.key,
        alice,
        dpo,
        bob,
        expired,
        stranger,
        signing_key,
        signing_pub,
        site.signing_key.parent,
    )


@dataclass
class Coordinator:
    service: AccessService
    endpoint: AdminEndpoint
    address: str
    submitted: list[tuple[bool, str | None]]
    access_dir: Path
    runs_dir: Path


@contextmanager
def running_coordinator(pki: Pki, tmp_path: Path) -> Iterator[Coordinator]:
    """A live mTLS admin endpoint on 127.0.0.1 (OS-chosen port), stopped after the test."""
    submitted: list[tuple[bool, str | None]] = []

    def submit(resume: bool, run_id: str | None) -> tuple[int | str, str]:
        submitted.append((resume, run_id))
        return 7, "ab" * 32

    site_keys = tmp_path / "site-keys"
    site_keys.mkdir()
    (site_keys / "hospital-a.pub").write_bytes((pki.site_dir / "signing.pub").read_bytes())
    runs = tmp_path / "runs"
    (runs / "run-1").mkdir(parents=True)
    (runs / "run-1" / "summary.json").write_text("{}", encoding="utf-8")
    policy = parse_policy(
        {
            "submit": [fingerprint(pki.alice)],
            "consent": ["CN=dpo-hospital-a"],
            "report": [fingerprint(pki.alice), "CN=alice"],
        },
        source="test",
    )
    log = AccessLog(
        tmp_path / "access",
        signing_key_pem=load_signing_private_key(pki.signing_key),
        signing_pub_pem=load_signing_public_key(pki.signing_pub),
    )
    actions = CoordinatorActions(
        runs_dir=runs,
        consent_registry=str(tmp_path / "consent.db"),
        site_keys_dir=site_keys,
        server_signing_pub=pki.signing_pub,
        submit=submit,
    )
    service = AccessService(
        policy=policy, ca_pem=pki.ca_cert.read_bytes(), log=log, actions=actions
    )
    context = server_tls_context(cert=pki.server_cert, key=pki.server_key, ca_cert=pki.ca_cert)
    endpoint = AdminEndpoint(service, host="127.0.0.1", port=0, context=context).start()
    host, port = endpoint.address
    try:
        yield Coordinator(service, endpoint, f"{host}:{port}", submitted, log.directory, runs)
    finally:
        endpoint.stop()
        log.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def coordinator(pki: Pki, tmp_path: Path) -> Iterator[Coordinator]:
    """A live mTLS admin endpoint on 127.0.0.1 (OS-chosen port), stopped after the test."""
    with running_coordinator(pki, tmp_path) as running:
        yield running
