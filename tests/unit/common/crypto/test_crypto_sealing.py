"""seal/open_sealed: pinned known answer (RFC 7748 keys) and every tamper case raising."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsafe.common.crypto import generate_sealing_key, generate_signing_key, open_sealed, seal
from fedsafe.common.crypto._primitives import _sealing_key_from_raw
from fedsafe.common.crypto.sealing import _seal_with_ephemeral
from fedsafe.common.errors import IntegrityError

# RFC 7748, section 6.1: Alice's key is the sender's ephemeral key, Bob's is the server's key.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
PLAINTEXT = b"fedsafe update: round 3"
CONTEXT = b"run=42;round=3;site=h1"
KAT_BLOB = bytes.fromhex(
    "01"
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    "74db232365db0301eb05f62fcaa8e92f1a1ccdd518ae92"
    "10b8e0de24cb20b3b18c12657338383d"
)
HEADER_LEN = 33


@pytest.fixture(scope="module")
def server_keys() -> tuple[bytes, bytes]:
    return generate_sealing_key()


@pytest.fixture(scope="module")
def blob(server_keys: tuple[bytes, bytes]) -> bytes:
    return seal(server_keys[1], PLAINTEXT, context=CONTEXT)


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def _expect_cannot_open(private_pem: bytes, blob: bytes, context: bytes = CONTEXT) -> None:
    with pytest.raises(IntegrityError) as info:
        open_sealed(private_pem, blob, context=context)
    assert str(info.value) == "sealed message could not be opened"  # opaque for every case


def test_known_answer_blob_is_exact() -> None:
    _, bob_public_pem = _sealing_key_from_raw(BOB_PRIVATE)

    blob = _seal_with_ephemeral(
        bob_public_pem, PLAINTEXT, context=CONTEXT, ephemeral_private_raw=ALICE_PRIVATE
    )

    assert blob == KAT_BLOB


def test_known_answer_matches_documented_recipe() -> None:
    okm = HKDF(hashes.SHA256(), 44, salt=ALICE_PUBLIC + BOB_PUBLIC, info=b"fedsafe seal v1").derive(
        SHARED
    )
    header = b"\x01" + ALICE_PUBLIC

    expected = header + AESGCM(okm[:32]).encrypt(okm[32:], PLAINTEXT, header + CONTEXT)

    assert expected == KAT_BLOB


def test_known_answer_blob_opens() -> None:
    bob_private_pem, _ = _sealing_key_from_raw(BOB_PRIVATE)

    plaintext = open_sealed(bob_private_pem, KAT_BLOB, context=CONTEXT)

    assert plaintext == PLAINTEXT


def test_round_trip_and_fresh_ephemeral_each_time(server_keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = server_keys

    first = seal(public_pem, PLAINTEXT, context=CONTEXT)
    second = seal(public_pem, PLAINTEXT, context=CONTEXT)

    assert first[0] == 1
    assert first[1:HEADER_LEN] != second[1:HEADER_LEN]
    assert open_sealed(private_pem, first, context=CONTEXT) == PLAINTEXT
    assert open_sealed(private_pem, second, context=CONTEXT) == PLAINTEXT


def test_empty_plaintext_round_trips(server_keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = server_keys

    blob = seal(public_pem, b"", context=b"")

    assert open_sealed(private_pem, blob, context=b"") == b""


def test_wrong_key_raises(blob: bytes) -> None:
    other_private, _ = generate_sealing_key()

    _expect_cannot_open(other_private, blob)


@pytest.mark.parametrize("index", [1, 16, HEADER_LEN - 1])
def test_flipped_header_byte_raises(
    server_keys: tuple[bytes, bytes], blob: bytes, index: int
) -> None:
    _expect_cannot_open(server_keys[0], _flip(blob, index))


@pytest.mark.parametrize("index", [HEADER_LEN, HEADER_LEN + len(PLAINTEXT) - 1])
def test_flipped_ciphertext_byte_raises(
    server_keys: tuple[bytes, bytes], blob: bytes, index: int
) -> None:
    _expect_cannot_open(server_keys[0], _flip(blob, index))


@pytest.mark.parametrize("index", [-16, -1])
def test_flipped_tag_byte_raises(server_keys: tuple[bytes, bytes], blob: bytes, index: int) -> None:
    _expect_cannot_open(server_keys[0], _flip(blob, index))


def test_every_flipped_byte_raises(server_keys: tuple[bytes, bytes], blob: bytes) -> None:
    for index in range(len(blob)):
        _expect_cannot_open(server_keys[0], _flip(blob, index))


@pytest.mark.parametrize(
    "context",
    [b"run=42;round=4;site=h1", b"run=43;round=3;site=h1", b"run=42;round=3;site=h2", b""],
    ids=["other-round", "other-run", "other-site", "empty"],
)
def test_replay_into_other_context_raises(
    server_keys: tuple[bytes, bytes], blob: bytes, context: bytes
) -> None:
    _expect_cannot_open(server_keys[0], blob, context)


@pytest.mark.parametrize("length", [0, 1, HEADER_LEN, HEADER_LEN + 15, -1])
def test_truncated_blob_raises(server_keys: tuple[bytes, bytes], blob: bytes, length: int) -> None:
    _expect_cannot_open(server_keys[0], blob[:length])


def test_appended_byte_raises(server_keys: tuple[bytes, bytes], blob: bytes) -> None:
    _expect_cannot_open(server_keys[0], blob + b"\x00")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_byte_raises(
    server_keys: tuple[bytes, bytes], blob: bytes, version: int
) -> None:
    _expect_cannot_open(server_keys[0], bytes([version]) + blob[1:])


def test_low_order_ephemeral_key_raises(server_keys: tuple[bytes, bytes], blob: bytes) -> None:
    forged = b"\x01" + bytes(32) + blob[HEADER_LEN:]

    _expect_cannot_open(server_keys[0], forged)


def test_signing_key_is_not_a_sealing_key(blob: bytes) -> None:
    signing_private, signing_public = generate_signing_key()

    with pytest.raises(ValueError, match="X25519"):
        open_sealed(signing_private, blob, context=CONTEXT)
    with pytest.raises(ValueError, match="X25519"):
        seal(signing_public, PLAINTEXT, context=CONTEXT)


def test_str_context_is_a_type_error(server_keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(TypeError, match="context"):
        seal(server_keys[1], PLAINTEXT, context="round=3")  # type: ignore[arg-type]
