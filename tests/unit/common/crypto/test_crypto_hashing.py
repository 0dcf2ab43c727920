"""sha256_hex and the ChaCha20 keystream used for secure-aggregation masks."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsafe.common.crypto import keystream, sha256_hex

SEED = bytes(range(32))
# Pinned output for SEED: changing the keystream recipe breaks every mask in flight.
SEED_KEYSTREAM_32 = bytes.fromhex(
    "aa9698114a758930f11bf7198611096378385a50c335e1b3ce658fb5fe1a3414"
)


def test_sha256_hex_known_answer() -> None:
    digest = sha256_hex(b"abc")

    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sha256_hex_rejects_str() -> None:
    with pytest.raises(TypeError, match="data"):
        sha256_hex("abc")  # type: ignore[arg-type]


def test_keystream_known_answer() -> None:
    stream = keystream(SEED, 32)

    assert stream == SEED_KEYSTREAM_32


def test_keystream_matches_documented_recipe() -> None:
    key = HKDF(hashes.SHA256(), 32, salt=None, info=b"fedsafe keystream v1").derive(SEED)
    expected = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(100))

    stream = keystream(SEED, 100)

    assert stream == expected


def test_keystream_is_deterministic_and_prefix_stable() -> None:
    first = keystream(SEED, 1000)

    second = keystream(SEED, 1000)

    assert first == second
    assert keystream(SEED, 10) == first[:10]
    assert len(keystream(SEED, 0)) == 0


def test_every_single_byte_change_of_seed_changes_stream() -> None:
    base = keystream(SEED, 64)
    streams = {base}

    for index in range(len(SEED)):
        seed = bytearray(SEED)
        seed[index] ^= 0x01
        stream = keystream(bytes(seed), 64)
        assert stream != base, index
        streams.add(stream)

    assert len(streams) == len(SEED) + 1


@pytest.mark.parametrize("length", [0, 1, 15])
def test_short_seed_rejected(length: int) -> None:
    with pytest.raises(ValueError, match="seed"):
        keystream(bytes(length), 8)


def test_negative_length_rejected() -> None:
    with pytest.raises(ValueError, match="nbytes"):
        keystream(SEED, -1)
