"""Ed25519 sign/verify: RFC 8032 known answers and one negative test per failure path."""

from __future__ import annotations

import hashlib

import pytest

from fedsafe.common.crypto import generate_signing_key, public_key_fingerprint, sign, verify
from fedsafe.common.crypto._primitives import _signing_key_from_raw
from fedsafe.common.errors import IntegrityError

# RFC 8032, section 7.1, TEST 1 (empty message).
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
MESSAGE = b"round=3;site=h1;update-sha256=00ff"


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_signing_key()


def _expect_integrity_error(public_pem: bytes, message: bytes, signature: bytes) -> None:
    with pytest.raises(IntegrityError) as info:
        verify(public_pem, message, signature)
    assert str(info.value) == "signature did not verify"  # opaque: same text for every failure


def test_rfc8032_vector1_signature_is_exact() -> None:
    private_pem, _ = _signing_key_from_raw(RFC8032_SECRET)

    signature = sign(private_pem, b"")

    assert signature[0] == 1
    assert signature[1:] == RFC8032_SIGNATURE


def test_rfc8032_vector1_verifies() -> None:
    _, public_pem = _signing_key_from_raw(RFC8032_SECRET)

    verify(public_pem, b"", b"\x01" + RFC8032_SIGNATURE)


def test_fingerprint_is_sha256_of_raw_public_key() -> None:
    _, public_pem = _signing_key_from_raw(RFC8032_SECRET)

    fingerprint = public_key_fingerprint(public_pem)

    assert fingerprint == hashlib.sha256(RFC8032_PUBLIC).hexdigest()


def test_generated_key_is_pem_and_round_trips(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys

    signature = sign(private_pem, MESSAGE)

    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert len(signature) == 65
    verify(public_pem, MESSAGE, signature)


def test_forged_signature_raises(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys
    signature = bytearray(sign(private_pem, MESSAGE))
    signature[10] ^= 0x01

    _expect_integrity_error(public_pem, MESSAGE, bytes(signature))


def test_signature_from_another_key_raises(keys: tuple[bytes, bytes]) -> None:
    other_private, _ = generate_signing_key()
    _, public_pem = keys

    _expect_integrity_error(public_pem, MESSAGE, sign(other_private, MESSAGE))


def test_tampered_message_raises(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys
    signature = sign(private_pem, MESSAGE)

    _expect_integrity_error(public_pem, MESSAGE + b"!", signature)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_byte_raises(keys: tuple[bytes, bytes], version: int) -> None:
    private_pem, public_pem = keys
    signature = bytes([version]) + sign(private_pem, MESSAGE)[1:]

    _expect_integrity_error(public_pem, MESSAGE, signature)


@pytest.mark.parametrize("length", [0, 1, 64])
def test_truncated_signature_raises(keys: tuple[bytes, bytes], length: int) -> None:
    private_pem, public_pem = keys

    _expect_integrity_error(public_pem, MESSAGE, sign(private_pem, MESSAGE)[:length])


def test_overlong_signature_raises(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys

    _expect_integrity_error(public_pem, MESSAGE, sign(private_pem, MESSAGE) + b"\x00")


def test_malformed_public_key_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="public_pem"):
        verify(b"not a key", MESSAGE, bytes(65))


def test_sealing_key_is_not_a_signing_key() -> None:
    from fedsafe.common.crypto import generate_sealing_key

    private_pem, _ = generate_sealing_key()

    with pytest.raises(ValueError, match="Ed25519"):
        sign(private_pem, MESSAGE)


def test_non_bytes_message_is_a_type_error(keys: tuple[bytes, bytes]) -> None:
    private_pem, _ = keys

    with pytest.raises(TypeError, match="message"):
        sign(private_pem, "text")  # type: ignore[arg-type]
