"""The site's random words: ChaCha20 under a fresh OS key, written in place, never repeated."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedsafe.common.crypto import _primitives as p
from fedsafe.common.crypto import os_random_bytes, os_random_words


@pytest.mark.parametrize("nbytes", [0, 1, 63, 64, 65, 1000, 4096 + 7])
def test_the_in_place_keystream_is_the_keystream(nbytes: int) -> None:
    key, nonce = os.urandom(32), os.urandom(16)
    buf = p.chacha20_keystream_into(key, nonce, nbytes)
    assert isinstance(buf, bytearray) and len(buf) == nbytes
    assert bytes(buf) == p.chacha20_keystream(key, nonce, nbytes)


def test_words_are_fresh_writable_uint64_and_never_repeat() -> None:
    a, b = os_random_words(50_000), os_random_words(50_000)
    assert a.dtype == np.dtype("<u8") and a.shape == (50_000,) and a.flags.writeable
    a[0] ^= np.uint64(1)  # the caller may work in place
    assert len(np.intersect1d(a, b)) == 0  # 2^-64 per pair: equal words mean a reused key
    bits = np.unpackbits(a.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.002
    assert os_random_words(0).shape == (0,)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_a_bad_word_count_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        os_random_words(bad)  # type: ignore[arg-type]


def test_bytes_and_words_come_from_different_keys() -> None:
    assert os_random_bytes(64) != os_random_bytes(64)
