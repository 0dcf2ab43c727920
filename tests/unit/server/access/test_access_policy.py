"""Role policy, the access: section of server.yaml, and the certificate checks behind them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _access_pki import Pki, coordinator, fingerprint, pki  # noqa: F401 - fixtures

from fedsafe.common.crypto.certificates import (
    certificate_identity,
    check_client_certificate,
    pem_to_der,
)
from fedsafe.common.errors import ConfigError, IntegrityError
from fedsafe.server.access.config import parse_access
from fedsafe.server.access.errors import AccessDeniedError
from fedsafe.server.access.policy import parse_policy


def _der(path: Path) -> bytes:
    return pem_to_der(path.read_bytes())


def test_roles_by_fingerprint_and_by_name(pki: Pki) -> None:
    # Arrange
    policy = parse_policy(
        {
            "submit": [fingerprint(pki.alice).upper().replace("SHA256", "sha256")],
            "report": ["CN=alice"],
        },
        source="server.yaml",
    )

    # Act
    alice = certificate_identity(_der(pki.alice.cert))
    renewed_alice = certificate_identity(_der(pki.expired.cert))  # same CN, other certificate

    # Assert
    assert policy.roles_of(alice) == ("submit", "report")
    assert policy.roles_of(renewed_alice) == ("report",)


def test_refusal_names_subject_and_missing_role(pki: Pki) -> None:
    # Arrange
    policy = parse_policy({"submit": ["CN=alice"]}, source="server.yaml")
    bob = certificate_identity(_der(pki.bob.cert))

    # Act
    with pytest.raises(AccessDeniedError) as refused:
        policy.require(bob, "submit")

    # Assert
    assert "CN=bob" in str(refused.value) and "'submit'" in str(refused.value)
    assert refused.value.subject == "CN=bob" and refused.value.role == "submit"


@pytest.mark.parametrize(
    ("roles", "key"),
    [
        ({"admin": []}, "access.roles.admin"),
        ({"submit": ["alice"]}, "access.roles.submit[0]"),
        ({"submit": ["sha256:1234"]}, "access.roles.submit[0]"),
        ({"submit": "CN=alice"}, "access.roles.submit"),
        (["submit"], "access.roles"),
    ],
)
def test_bad_policy_names_the_key(roles: object, key: str) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_policy(roles, source="server.yaml")
    assert bad.value.key == key and "server.yaml" in str(bad.value)


def test_access_section_defaults_to_the_superlink_tls_files(pki: Pki, tmp_path: Path) -> None:
    # Arrange
    tls = {"ca_cert": pki.ca_cert, "cert": pki.server_cert, "key": pki.server_key}

    # Act
    access = parse_access(
        {"listen": "127.0.0.1:0", "roles": {"consent": ["CN=dpo"]}},
        base=tmp_path,
        source="server.yaml",
        workdir=tmp_path / "coordinator",
        tls=tls,
    )

    # Assert
    assert access is not None
    assert access.ca_cert == pki.ca_cert and access.port == 0 and access.host == "127.0.0.1"
    assert access.ledger_dir == tmp_path / "coordinator" / "access"
    assert parse_access(None, base=tmp_path, source="s", workdir=tmp_path, tls=tls) is None
    with pytest.raises(ConfigError, match="access.listen"):
        parse_access({"roles": {}}, base=tmp_path, source="s", workdir=tmp_path, tls=tls)
    with pytest.raises(ConfigError, match="access.rolse"):
        parse_access({"rolse": {}}, base=tmp_path, source="s", workdir=tmp_path, tls=tls)


def test_client_certificate_checks(pki: Pki) -> None:
    # Arrange
    ca = pki.ca_cert.read_bytes()
    later = datetime.now(UTC) + timedelta(days=400)

    # Act / Assert: good, foreign CA, out of date, not a client certificate
    assert check_client_certificate(_der(pki.alice.cert), ca).common_name == "alice"
    with pytest.raises(IntegrityError, match="not issued by the federation CA"):
        check_client_certificate(_der(pki.stranger.cert), ca)
    with pytest.raises(IntegrityError, match="not valid at"):
        check_client_certificate(_der(pki.alice.cert), ca, at_time=later)
    with pytest.raises(IntegrityError, match="not valid at"):
        check_client_certificate(_der(pki.expired.cert), ca)
    with pytest.raises(IntegrityError, match="not a client certificate"):
        check_client_certificate(_der(pki.server_cert), ca)


def test_server_yaml_access_errors_name_the_file_and_key(pki: Pki, tmp_path: Path) -> None:
    # Arrange
    from fedsafe.server.access.deploy import access_of
    from fedsafe.server.access.errors import AccessError
    from fedsafe.server.deploy.config import load_server_config

    tls = f"tls: {{ca_cert: {pki.ca_cert}, cert: {pki.server_cert}, key: {pki.server_key}}}\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(tls + 'access: {listen: "127.0.0.1:9094", roles: {submit: [alice]}}\n')
    plain = tmp_path / "plain.yaml"
    plain.write_text(tls)

    # Act / Assert
    with pytest.raises(ConfigError) as refused:
        load_server_config(bad)
    assert refused.value.key == "access.roles.submit[0]" and str(bad) in str(refused.value)
    cfg = load_server_config(plain)
    assert cfg.access is None
    with pytest.raises(AccessError, match="no access: section"):
        access_of(cfg)
