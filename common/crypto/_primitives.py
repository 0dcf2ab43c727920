"""The only fedsafe module that imports cryptography.hazmat: thin typed wrappers over primitives."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsafe.common.errors import IntegrityError

__all__ = [
    "ED25519_SIGNATURE_LEN",
    "X25519_KEY_LEN",
    "ed25519_generate",
    "ed25519_sign",
    "ed25519_verify",
    "ed25519_public_raw",
    "ed25519_check_private",
    "x25519_generate",
    "x25519_private_raw",
    "x25519_public_raw",
    "x25519_public_from_private_raw",
    "x25519_exchange",
    "x25519_check_private",
    "hkdf_sha256",
    "aes256gcm_encrypt",
    "aes256gcm_decrypt",
    "chacha20_keystream",
    "ecdsa_openssh_generate",
    "ecdsa_openssh_check_private",
    "ecdsa_openssh_check_public",
    "ec_check_private",
    "x509_check_ca_cert",
    "x509_create_ca",
    "x509_issue_server",
    "x509_issue_client",
    "x509_check_ca",
    "_signing_key_from_raw",
    "_sealing_key_from_raw",
]

ED25519_SIGNATURE_LEN = 64
X25519_KEY_LEN = 32
_PEM = serialization.Encoding.PEM
_RAW = serialization.Encoding.Raw
_PKCS8 = serialization.PrivateFormat.PKCS8
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_NO_ENC = serialization.NoEncryption()
# Clock skew tolerated between the CA host and the peers checking a certificate.
_BACKDATE = timedelta(minutes=5)


def _private_pem(
    key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey,
) -> bytes:
    return key.private_bytes(_PEM, _PKCS8, _NO_ENC)


def _public_pem(
    key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey | ec.EllipticCurvePublicKey,
) -> bytes:
    return key.public_bytes(_PEM, _SPKI)


def _load_private(pem: bytes, what: str) -> object:
    if not isinstance(pem, bytes):
        raise TypeError(f"{what} must be bytes (PEM), got {type(pem).__name__}")
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ValueError(f"{what} is not an unencrypted PKCS8 PEM private key") from err


def _load_public(pem: bytes, what: str) -> object:
    if not isinstance(pem, bytes):
        raise TypeError(f"{what} must be bytes (PEM), got {type(pem).__name__}")
    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise ValueError(f"{what} is not a SubjectPublicKeyInfo PEM public key") from err


# --- Ed25519 -----------------------------------------------------------------------------------


def _ed25519_private(pem: bytes, what: str) -> ed25519.Ed25519PrivateKey:
    key = _load_private(pem, what)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{what} is not an Ed25519 private key")
    return key


def _ed25519_public(pem: bytes, what: str) -> ed25519.Ed25519PublicKey:
    key = _load_public(pem, what)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(f"{what} is not an Ed25519 public key")
    return key


def ed25519_generate() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    return _private_pem(key), _public_pem(key.public_key())


def _signing_key_from_raw(raw: bytes) -> tuple[bytes, bytes]:
    """Build an Ed25519 PEM pair from a raw 32-byte secret; for known-answer tests only."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    return _private_pem(key), _public_pem(key.public_key())


def ed25519_check_private(pem: bytes, what: str) -> bytes:
    """Return the matching public PEM; raise ValueError if ``pem`` is not an Ed25519 private key."""
    return _public_pem(_ed25519_private(pem, what).public_key())


def ed25519_sign(private_pem: bytes, message: bytes) -> bytes:
    return _ed25519_private(private_pem, "private_pem").sign(message)


def ed25519_verify(public_pem: bytes, message: bytes, signature: bytes, *, error: str) -> None:
    key = _ed25519_public(public_pem, "public_pem")
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise IntegrityError(error) from None


def ed25519_public_raw(public_pem: bytes) -> bytes:
    return _ed25519_public(public_pem, "public_pem").public_bytes(
        _RAW, serialization.PublicFormat.Raw
    )


# --- X25519 ------------------------------------------------------------------------------------


def _x25519_private(pem: bytes, what: str) -> x25519.X25519PrivateKey:
    key = _load_private(pem, what)
    if not isinstance(key, x25519.X25519PrivateKey):
        raise ValueError(f"{what} is not an X25519 private key")
    return key


def x25519_generate() -> tuple[bytes, bytes]:
    key = x25519.X25519PrivateKey.generate()
    return _private_pem(key), _public_pem(key.public_key())


def _sealing_key_from_raw(raw: bytes) -> tuple[bytes, bytes]:
    """Build an X25519 PEM pair from a raw 32-byte secret; for known-answer tests only."""
    key = x25519.X25519PrivateKey.from_private_bytes(raw)
    return _private_pem(key), _public_pem(key.public_key())


def x25519_check_private(pem: bytes, what: str) -> bytes:
    """Return the matching public PEM; raise ValueError if ``pem`` is not an X25519 private key."""
    return _public_pem(_x25519_private(pem, what).public_key())


def x25519_private_raw(private_pem: bytes, what: str) -> bytes:
    key = _x25519_private(private_pem, what)
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw, _NO_ENC)


def x25519_public_raw(public_pem: bytes, what: str) -> bytes:
    key = _load_public(public_pem, what)
    if not isinstance(key, x25519.X25519PublicKey):
        raise ValueError(f"{what} is not an X25519 public key")
    return key.public_bytes(_RAW, serialization.PublicFormat.Raw)


def x25519_public_from_private_raw(private_raw: bytes) -> bytes:
    key = x25519.X25519PrivateKey.from_private_bytes(private_raw)
    return key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def x25519_exchange(private_raw: bytes, peer_public_raw: bytes, *, error: str) -> bytes:
    """Diffie-Hellman; a malformed or low-order peer key raises IntegrityError(error)."""
    try:
        peer = x25519.X25519PublicKey.from_public_bytes(peer_public_raw)
        return x25519.X25519PrivateKey.from_private_bytes(private_raw).exchange(peer)
    except ValueError:
        raise IntegrityError(error) from None


# --- Symmetric ---------------------------------------------------------------------------------


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def aes256gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aes256gcm_decrypt(
    key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, *, error: str
) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise IntegrityError(error) from None


def chacha20_keystream(key: bytes, nonce: bytes, nbytes: int) -> bytes:
    encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    return encryptor.update(bytes(nbytes)) + encryptor.finalize()


_CHACHA_BLOCK = 64


def chacha20_keystream_into(key: bytes, nonce: bytes, nbytes: int) -> bytearray:
    """The same keystream written in place into one fresh buffer (no copies: OpenSSL
    encrypts the zeros where they lie); `nbytes` long after the slack OpenSSL asks for."""
    buf = bytearray(nbytes + _CHACHA_BLOCK)
    encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    written = encryptor.update_into(memoryview(buf)[:nbytes], buf)
    if written != nbytes:  # pragma: no cover - a stream cipher returns what it was given
        raise RuntimeError(f"ChaCha20 wrote {written} of {nbytes} bytes")
    encryptor.finalize()
    del buf[nbytes:]
    return buf


# --- Flower SuperNode authentication (OpenSSH NIST EC) ------------------------------------------


def ecdsa_openssh_generate(comment: str) -> tuple[bytes, bytes]:
    """P-384 key as (OpenSSH private key, OpenSSH public key line), the format Flower 1.39 loads."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(_PEM, serialization.PrivateFormat.OpenSSH, _NO_ENC)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + b" " + comment.encode("ascii") + b"\n"


_NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def ecdsa_openssh_check_private(data: bytes) -> None:
    """Raise ValueError unless ``data`` is an unencrypted OpenSSH NIST EC private key."""
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ValueError("not an unencrypted OpenSSH private key") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, _NIST_CURVES):
        raise ValueError("not a NIST EC (P-256/P-384/P-521) key, which Flower requires")


def ecdsa_openssh_check_public(data: bytes) -> None:
    """Raise ValueError unless ``data`` is an OpenSSH NIST EC public key line."""
    try:
        key = serialization.load_ssh_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise ValueError("not an OpenSSH public key line") from err
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _NIST_CURVES):
        raise ValueError("not a NIST EC (P-256/P-384/P-521) key, which Flower requires")


# --- X.509 for gRPC TLS ------------------------------------------------------------------------


def _validity(now: datetime | None, valid_days: int) -> tuple[datetime, datetime]:
    start = (now or datetime.now(UTC)) - _BACKDATE
    return start, start + _BACKDATE + timedelta(days=valid_days)


def x509_create_ca(
    name: str, *, valid_days: int, now: datetime | None = None
) -> tuple[bytes, bytes]:
    """Self-signed ECDSA P-384 CA that signs leaf certificates only; returns (key PEM, cert PEM)."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    not_before, not_after = _validity(now, valid_days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA384())
    )
    return _private_pem(key), cert.public_bytes(_PEM)


def ec_check_private(pem: bytes, what: str) -> None:
    """Raise ValueError unless ``pem`` is an unencrypted PKCS8 PEM EC private key."""
    if not isinstance(_load_private(pem, what), ec.EllipticCurvePrivateKey):
        raise ValueError(f"{what} is not an EC private key")


def x509_check_ca_cert(pem: bytes) -> None:
    """Raise ValueError unless ``pem`` is a PEM X.509 certificate marked as a CA."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, x509.ExtensionNotFound) as err:
        raise ValueError("not a PEM X.509 CA certificate") from err
    if not constraints.ca:
        raise ValueError("certificate is not a CA (basicConstraints ca=False)")


def _load_ca(
    key_pem: bytes, cert_pem: bytes
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _load_private(key_pem, "CA key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("CA key is not an EC private key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as err:
        raise ValueError("CA certificate is not a PEM X.509 certificate") from err
    if _public_pem(cert.public_key()) != _public_pem(key.public_key()):  # type: ignore[arg-type]
        raise ValueError("CA key does not match the CA certificate")
    return key, cert


def x509_check_ca(key_pem: bytes, cert_pem: bytes) -> datetime:
    """Raise ValueError unless key and certificate form a CA pair; return the CA's expiry."""
    return _load_ca(key_pem, cert_pem)[1].not_valid_after_utc


def x509_issue_server(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    *,
    hosts: list[str],
    valid_days: int,
    now: datetime | None = None,
) -> tuple[bytes, bytes]:
    """Fresh P-384 key and serverAuth certificate with DNS/IP SANs; returns (key PEM, cert PEM)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return _issue_leaf(
        ca_key_pem, ca_cert_pem, hosts[0], names, ExtendedKeyUsageOID.SERVER_AUTH, valid_days, now
    )


def x509_issue_client(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    *,
    name: str,
    valid_days: int,
    now: datetime | None = None,
) -> tuple[bytes, bytes]:
    """Fresh P-384 key and clientAuth certificate (CN=name) for mTLS; returns (key, cert) PEM."""
    return _issue_leaf(
        ca_key_pem, ca_cert_pem, name, [], ExtendedKeyUsageOID.CLIENT_AUTH, valid_days, now
    )


def _issue_leaf(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    common_name: str,
    names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    valid_days: int,
    now: datetime | None,
) -> tuple[bytes, bytes]:
    ca_key, ca_cert = _load_ca(ca_key_pem, ca_cert_pem)
    key = ec.generate_private_key(ec.SECP384R1())
    not_before, not_after = _validity(now, valid_days)
    if not_after > ca_cert.not_valid_after_utc:
        raise ValueError(
            f"valid_days={valid_days} would outlive the CA "
            f"(expires {ca_cert.not_valid_after_utc:%Y-%m-%d}); renew the CA or shorten valid_days"
        )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = (
        builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return _private_pem(key), cert.public_bytes(_PEM)
