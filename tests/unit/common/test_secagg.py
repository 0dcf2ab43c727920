"""SecAgg hardening: ChaCha20 masks, pinned Flower patch points, unmask checks, sizing."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import generate_key_pairs

from fedsafe.common.crypto import keystream
from fedsafe.common.errors import FedsafeError
from fedsafe.common.secagg import (
    FLWR_SERIES,
    PATCH_POINTS,
    UnmaskRefusedError,
    aggregate_error_bound,
    chacha_rand_gen,
    check_patch_points,
    check_unmask_request,
    hardened_prg,
    prg_installed,
    secagg_sizing,
)

# The modules themselves (the packages re-export a function under the same name as the module).
client_mod = importlib.import_module(PATCH_POINTS[0][0])
server_mod = importlib.import_module(PATCH_POINTS[1][0])
R = 2**32
DIMS = [(), (3,), (2, 5)]


# --- the generator --------------------------------------------------------------------------


def test_masks_are_the_seed_keystream_as_uint32_words_in_order() -> None:
    seed = bytes(range(32))
    words = np.frombuffer(keystream(seed, 4 * 14), dtype="<u4").astype(np.int64)
    out = chacha_rand_gen(seed, R, DIMS)
    assert [a.shape for a in out] == DIMS and all(a.dtype == np.int64 for a in out)
    assert np.array_equal(np.concatenate([a.ravel() for a in out]), words)


def test_masks_reduce_into_the_range_and_are_deterministic() -> None:
    seed = b"s" * 44  # Flower's pairwise key: 32 bytes, base64url: 44 bytes
    out = chacha_rand_gen(seed, 2**10, [(4096,)])[0]
    assert out.min() >= 0 and out.max() < 2**10 and out.max() > 2**10 - 16
    assert np.array_equal(out, chacha_rand_gen(seed, 2**10, [(4096,)])[0])


@pytest.mark.parametrize("length", [32, 44])
def test_seeds_differing_in_any_one_byte_give_different_masks(length: int) -> None:
    seed = bytes(range(7, 7 + length))
    base = chacha_rand_gen(seed, R, [(16,)])[0]
    for i in range(length):
        other = bytearray(seed)
        other[i] ^= 0x01
        assert not np.array_equal(base, chacha_rand_gen(bytes(other), R, [(16,)])[0]), i


def test_flowers_generator_collides_where_ours_does_not() -> None:
    """Flower folds the seed to 32 bits by XOR: swapping two 4-byte words gives the same masks."""
    seed = bytes(range(1, 33))
    swapped = seed[4:8] + seed[0:4] + seed[8:]
    assert np.array_equal(
        pseudo_rand_gen(seed, R, [(16,)])[0], pseudo_rand_gen(swapped, R, [(16,)])[0]
    )
    assert not np.array_equal(
        chacha_rand_gen(seed, R, [(16,)])[0], chacha_rand_gen(swapped, R, [(16,)])[0]
    )


@pytest.mark.parametrize("bad", [0, 1, 3, 1000, 2**33])
def test_a_range_that_is_not_a_power_of_two_up_to_2_32_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        chacha_rand_gen(b"k" * 32, bad, [(2,)])


def test_a_short_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        chacha_rand_gen(b"short", R, [(2,)])


def test_pairwise_and_private_masks_cancel_in_the_modular_sum() -> None:
    """Three parties with ECDH pairwise keys (as Flower derives them) and private seeds."""
    rng = np.random.default_rng(0)
    keys = [generate_key_pairs() for _ in range(3)]
    plain = [rng.integers(0, 2**20, size=(6,), dtype=np.int64) for _ in range(3)]
    private = [bytes([i]) * 32 for i in range(3)]
    masked = []
    for i in range(3):
        vec = plain[i] + chacha_rand_gen(private[i], R, [(6,)])[0]
        for j in range(3):
            if i == j:
                continue
            mask = chacha_rand_gen(generate_shared_key(keys[i][0], keys[j][1]), R, [(6,)])[0]
            vec = vec + mask if i > j else vec - mask
        masked.append(vec % R)
    assert not any(np.array_equal(m, p) for m, p in zip(masked, plain, strict=False))
    unmasked = sum(masked) - sum(chacha_rand_gen(s, R, [(6,)])[0] for s in private)
    assert np.array_equal(unmasked % R, sum(plain) % R)


# --- the patch points, pinned to flwr 1.39 -----------------------------------------------------


def test_flower_is_the_release_the_patch_points_were_read_from() -> None:
    import flwr

    assert flwr.__version__.startswith(FLWR_SERIES), (
        f"flwr {flwr.__version__}: re-read SecAgg+ in the client mod and the workflow, "
        "then update PATCH_POINTS"
    )


def test_each_patch_point_exists_and_is_looked_up_when_masking_or_unmasking() -> None:
    for module, name in PATCH_POINTS:
        assert getattr(importlib.import_module(module), name) is pseudo_rand_gen, module
    # The functions read the module global at call time, so replacing it takes effect.
    assert "pseudo_rand_gen" in client_mod._collect_masked_vectors.__code__.co_names
    assert "pseudo_rand_gen" in server_mod.SecAggPlusWorkflow.unmask_stage.__code__.co_names
    check_patch_points()


def test_the_context_patches_both_sides_and_restores_them_even_when_nested() -> None:
    assert not prg_installed()
    with hardened_prg():
        assert client_mod.pseudo_rand_gen is chacha_rand_gen
        assert server_mod.pseudo_rand_gen is chacha_rand_gen
        with hardened_prg():
            assert prg_installed()
        assert prg_installed()
    assert (
        client_mod.pseudo_rand_gen is pseudo_rand_gen
        and server_mod.pseudo_rand_gen is pseudo_rand_gen
    )


def test_a_moved_patch_point_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(server_mod, "pseudo_rand_gen")
    with pytest.raises(FedsafeError, match="no longer has 'pseudo_rand_gen'"), hardened_prg():
        pass


def test_a_patch_point_replaced_by_someone_else_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_mod, "pseudo_rand_gen", lambda *a: [])
    with pytest.raises(FedsafeError, match="replaced by something else"):
        check_patch_points()


def test_another_flower_release_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr

    monkeypatch.setattr(flwr, "__version__", "1.40.0")
    with pytest.raises(FedsafeError, match="pinned to flwr 1.39"):
        check_patch_points()


# --- the unmask request ----------------------------------------------------------------------


def test_intersecting_alive_and_dropped_sets_are_refused_naming_the_nodes() -> None:
    with pytest.raises(
        UnmaskRefusedError, match=r"node\(s\) \[3\] are listed both alive and dropped"
    ):
        check_unmask_request(node_id=1, neighbours=[1, 2, 3, 4], active=[1, 2, 3], dead=[3, 4])


def test_an_honest_request_passes() -> None:
    check_unmask_request(node_id=1, neighbours=[1, 2, 3, 4], active=[1, 2, 3], dead=[4])


@pytest.mark.parametrize(
    ("active", "dead", "match"),
    [
        ([2, 3], [1], "this node \\(1\\) is listed as dropped"),
        ([1, 2, 2], [], "repeats node ids"),
        ([1, 2, 9], [], "\\[9\\] are not neighbours"),
    ],
)
def test_other_unsafe_requests_are_refused(active: list[int], dead: list[int], match: str) -> None:
    with pytest.raises(UnmaskRefusedError, match=match):
        check_unmask_request(node_id=1, neighbours=[1, 2, 3], active=active, dead=dead)


# --- sizing -------------------------------------------------------------------------------


def test_sizing_follows_the_real_counts_and_never_wraps_the_modulus() -> None:
    counts = [243, 234, 160, 98]
    s = secagg_sizing(counts, clipping_range=8.0)
    assert s.max_weight == 243.0 and s.num_shares == 4 and s.threshold == 3
    assert s.quantization_range & (s.quantization_range - 1) == 0
    assert (
        len(counts) * s.quantization_range
        < s.modulus_range
        <= 2 * (len(counts) + 1) * s.quantization_range
    )
    assert aggregate_error_bound(s, counts) < 1e-7


def test_sizing_for_ten_sites_keeps_a_fine_step() -> None:
    s = secagg_sizing([100] * 10, clipping_range=8.0)
    assert s.threshold == 6 and 10 * s.quantization_range < s.modulus_range and s.step < 1e-7


@pytest.mark.parametrize(
    ("counts", "kwargs", "match"),
    [
        ([10, 20], {}, "at least 3 sites"),
        ([10, 0, 5], {}, "> 0 training examples"),
        ([10, 20, 30], {"threshold": 3}, "threshold must be in \\[2, 2\\]"),
        ([10, 20, 30], {"clipping_range": 0.0}, "clipping range"),
    ],
)
def test_sizing_refuses_unsafe_setups(
    counts: list[int], kwargs: dict[str, float], match: str
) -> None:
    with pytest.raises(FedsafeError, match=match):
        secagg_sizing(counts, **{"clipping_range": 8.0, **kwargs})  # type: ignore[arg-type]
