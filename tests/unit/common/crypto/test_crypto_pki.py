"""PKI files: CA, SuperLink TLS certificate, SuperNode auth keys, server sealing/signing keys."""

from __future__ import annotations

import argparse
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedsafe.common.crypto import open_sealed, seal, sign, verify
from fedsafe.common.crypto.pki import (
    KeyExistsError,
    KeyFileError,
    init_ca,
    init_server_sealing_key,
    init_server_signing_key,
    init_site_keys,
    issue_server_certificate,
    load_auth_public_key,
    load_sealing_private_key,
    load_sealing_public_key,
    load_signing_private_key,
    load_signing_public_key,
)
from fedsafe.common.errors import FedsafeError

HOSTS = ["localhost", "superlink.fedsafe.internal", "127.0.0.1", "::1"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca", "fedsafe test CA")
    return tmp_path / "ca"


def _spki(key: object) -> bytes:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


# --- CA ----------------------------------------------------------------------------------------


def test_init_ca_writes_private_key_0600_in_0700_directory(tmp_path: Path) -> None:
    files = init_ca(tmp_path / "ca", "fedsafe test CA")

    assert files.key == tmp_path / "ca" / "ca.key"
    assert _mode(files.key) == 0o600
    assert _mode(tmp_path / "ca") == 0o700
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.rfc4514_string() == "CN=fedsafe test CA"


def test_init_ca_refuses_to_overwrite(ca_dir: Path) -> None:
    before = (ca_dir / "ca.key").read_bytes()

    with pytest.raises(KeyExistsError, match="ca.key"):
        init_ca(ca_dir, "another CA")

    assert (ca_dir / "ca.key").read_bytes() == before


def test_init_ca_rejects_non_positive_validity(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid_days"):
        init_ca(tmp_path, "CA", valid_days=0)


# --- SuperLink TLS certificate -----------------------------------------------------------------


def test_server_certificate_has_dns_and_ip_sans(ca_dir: Path, tmp_path: Path) -> None:
    files = issue_server_certificate(ca_dir, tmp_path / "server", hosts=HOSTS)

    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "superlink.fedsafe.internal"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_certificate_chains_to_ca(ca_dir: Path, tmp_path: Path) -> None:
    files = issue_server_certificate(ca_dir, tmp_path / "server", hosts=HOSTS)

    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca_public = ca_cert.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_public.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    cert.verify_directly_issued_by(ca_cert)
    assert files.ca_cert == ca_dir / "ca.pem"


def test_server_key_is_0600_and_matches_certificate(ca_dir: Path, tmp_path: Path) -> None:
    files = issue_server_certificate(ca_dir, tmp_path / "server", hosts=HOSTS)

    key = load_pem_private_key(files.key.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert _mode(files.key) == 0o600
    assert _mode(tmp_path / "server") == 0o700
    assert _spki(key.public_key()) == _spki(cert.public_key())


def test_renewal_changes_server_key_but_not_site_keys(ca_dir: Path, tmp_path: Path) -> None:
    first = issue_server_certificate(ca_dir, tmp_path / "server", hosts=HOSTS)
    first_key, first_cert = first.key.read_bytes(), first.cert.read_bytes()
    site = init_site_keys(tmp_path / "sites" / "h1", "h1")
    site_files = [site.auth_key, site.auth_pub, site.signing_key, site.signing_pub]
    site_before = [(path.read_bytes(), path.stat().st_mtime_ns) for path in site_files]

    renewed = issue_server_certificate(ca_dir, tmp_path / "server", hosts=HOSTS)

    assert renewed.key == first.key
    assert renewed.key.read_bytes() != first_key
    assert renewed.cert.read_bytes() != first_cert
    assert _mode(renewed.key) == 0o600
    assert [(path.read_bytes(), path.stat().st_mtime_ns) for path in site_files] == site_before


def test_server_certificate_without_ca_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="ca.key.*file not found"):
        issue_server_certificate(tmp_path / "nope", tmp_path / "server", hosts=HOSTS)


def test_server_certificate_with_mismatched_ca_key_names_the_file(tmp_path: Path) -> None:
    init_ca(tmp_path / "a", "CA a")
    init_ca(tmp_path / "b", "CA b")
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())

    with pytest.raises(KeyFileError, match="ca.key.*does not match"):
        issue_server_certificate(tmp_path / "a", tmp_path / "server", hosts=HOSTS)


def test_server_certificate_with_malformed_ca_cert_names_the_file(
    ca_dir: Path, tmp_path: Path
) -> None:
    (ca_dir / "ca.pem").write_bytes(b"garbage")

    with pytest.raises(KeyFileError, match="ca.pem.*malformed"):
        issue_server_certificate(ca_dir, tmp_path / "server", hosts=HOSTS)


def test_server_certificate_may_not_outlive_ca(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", "short CA", valid_days=30)

    with pytest.raises(ValueError, match="outlive the CA"):
        issue_server_certificate(tmp_path / "ca", tmp_path / "server", hosts=HOSTS, valid_days=31)


def test_server_certificate_needs_hosts(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hosts"):
        issue_server_certificate(ca_dir, tmp_path / "server", hosts=[])


# --- Site keys -----------------------------------------------------------------------------------


def test_site_keys_written_with_private_files_0600(tmp_path: Path) -> None:
    files = init_site_keys(tmp_path / "h1", "h1")

    assert files.site == "h1"
    assert _mode(tmp_path / "h1") == 0o700
    for private in (files.auth_key, files.signing_key):
        assert _mode(private) == 0o600
    for public in (files.auth_pub, files.signing_pub):
        assert public.is_file()


def test_supernode_auth_key_loads_as_flower_does(tmp_path: Path) -> None:
    files = init_site_keys(tmp_path / "h1", "h1")

    private = load_ssh_private_key(files.auth_key.read_bytes(), None)
    public = load_ssh_public_key(files.auth_pub.read_bytes())

    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert _spki(private.public_key()) == _spki(public)
    assert files.auth_pub.read_bytes().rstrip().endswith(b"fedsafe-site:h1")
    assert load_auth_public_key(files.auth_pub) == files.auth_pub.read_bytes()


def test_supernode_auth_key_accepted_by_flower_helpers(tmp_path: Path) -> None:
    asymmetric = pytest.importorskip("flwr.supercore.primitives.asymmetric")
    files = init_site_keys(tmp_path / "h1", "h1")

    public = load_ssh_public_key(files.auth_pub.read_bytes())

    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert asymmetric.uses_nist_ec_curve(public)


def test_supernode_auth_keys_load_through_flower_cli_code(tmp_path: Path) -> None:
    supernode_cli = pytest.importorskip("flwr.supernode.cli.flower_supernode")
    register_cli = pytest.importorskip("flwr.cli.supernode.register")
    setup = getattr(supernode_cli, "_try_setup_client_authentication", None)
    if setup is None:
        pytest.skip("flwr changed its private SuperNode key loader")
    files = init_site_keys(tmp_path / "h1", "h1")
    args = argparse.Namespace(
        auth_supernode_private_key=str(files.auth_key), auth_supernode_public_key=None
    )

    private, public = setup(args)
    registered = register_cli.try_load_public_key(files.auth_pub)

    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert _spki(public) == _spki(load_ssh_public_key(files.auth_pub.read_bytes()))
    assert registered


def test_site_signing_key_signs(tmp_path: Path) -> None:
    files = init_site_keys(tmp_path / "h1", "h1")

    signature = sign(load_signing_private_key(files.signing_key), b"attestation")

    verify(load_signing_public_key(files.signing_pub), b"attestation", signature)


def test_site_keys_refuse_to_overwrite(tmp_path: Path) -> None:
    files = init_site_keys(tmp_path / "h1", "h1")
    before = files.auth_key.read_bytes()

    with pytest.raises(KeyExistsError, match="auth.key"):
        init_site_keys(tmp_path / "h1", "h1")

    assert files.auth_key.read_bytes() == before


def test_site_keys_refuse_when_only_signing_key_exists(tmp_path: Path) -> None:
    (tmp_path / "h1").mkdir()
    (tmp_path / "h1" / "signing.key").write_bytes(b"precious")

    with pytest.raises(KeyExistsError, match="signing.key"):
        init_site_keys(tmp_path / "h1", "h1")

    assert not (tmp_path / "h1" / "auth.key").exists()
    assert (tmp_path / "h1" / "signing.key").read_bytes() == b"precious"


def test_key_exists_error_is_a_fedsafe_error() -> None:
    assert issubclass(KeyExistsError, KeyFileError)
    assert issubclass(KeyFileError, FedsafeError)


@pytest.mark.parametrize("site", ["", "../etc", "a b", "-leading"])
def test_bad_site_name_rejected(tmp_path: Path, site: str) -> None:
    with pytest.raises(ValueError, match="site"):
        init_site_keys(tmp_path / "x", site)


# --- Server sealing and signing keys -----------------------------------------------------------


def test_server_sealing_key_files_round_trip(tmp_path: Path) -> None:
    private_path, public_path = init_server_sealing_key(tmp_path / "server")

    blob = seal(load_sealing_public_key(public_path), b"update", context=b"round=1")

    assert (private_path.name, public_path.name) == ("sealing.key", "sealing.pub")
    assert _mode(private_path) == 0o600
    assert (
        open_sealed(load_sealing_private_key(private_path), blob, context=b"round=1") == b"update"
    )


def test_server_sealing_key_refuses_to_overwrite(tmp_path: Path) -> None:
    init_server_sealing_key(tmp_path)

    with pytest.raises(KeyExistsError, match="sealing.key"):
        init_server_sealing_key(tmp_path)


def test_server_signing_key_files_round_trip(tmp_path: Path) -> None:
    private_path, public_path = init_server_signing_key(tmp_path / "server")

    signature = sign(load_signing_private_key(private_path), b"ledger-head")

    assert (private_path.name, public_path.name) == ("server_signing.key", "server_signing.pub")
    assert _mode(private_path) == 0o600
    verify(load_signing_public_key(public_path), b"ledger-head", signature)


def test_server_signing_key_refuses_to_overwrite(tmp_path: Path) -> None:
    init_server_signing_key(tmp_path)

    with pytest.raises(KeyExistsError, match="server_signing.key"):
        init_server_signing_key(tmp_path)


# --- Loading helpers -----------------------------------------------------------------------------


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"absent\.key: file not found"):
        load_signing_private_key(tmp_path / "absent.key")


def test_unreadable_key_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "dir.key").mkdir()

    with pytest.raises(KeyFileError, match=r"dir\.key: is a directory"):
        load_sealing_private_key(tmp_path / "dir.key")


def test_malformed_key_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.pub").write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n")

    with pytest.raises(KeyFileError, match=r"bad\.pub: malformed"):
        load_signing_public_key(tmp_path / "bad.pub")


def test_wrong_kind_of_key_is_named(tmp_path: Path) -> None:
    private_path, public_path = init_server_sealing_key(tmp_path)

    with pytest.raises(KeyFileError, match=r"sealing\.key: malformed.*Ed25519"):
        load_signing_private_key(private_path)
    with pytest.raises(KeyFileError, match=r"sealing\.pub: malformed.*Ed25519"):
        load_signing_public_key(public_path)
    with pytest.raises(KeyFileError, match=r"sealing\.pub: malformed"):
        load_auth_public_key(public_path)
