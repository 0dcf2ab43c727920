"""Secure-aggregation hardening: ChaCha20 masks, Flower patch points, unmask checks, sizing."""

from __future__ import annotations

import hashlib
import importlib
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from fedsafe.common.crypto import keystream
from fedsafe.common.errors import FedsafeError

__all__ = [
    "FLWR_SERIES",
    "PATCH_POINTS",
    "PRG_KEY",
    "PRG_NAME",
    "UnmaskRefusedError",
    "SecAggSizing",
    "chacha_rand_gen",
    "check_patch_points",
    "hardened_prg",
    "prg_installed",
    "check_unmask_request",
    "secagg_sizing",
    "aggregate_error_bound",
    "MASKING_NAME",
    "masked_digest",
]

# The Flower release whose SecAgg+ modules the patch points below were read from.
FLWR_SERIES = "1.39."
# Module globals that Flower's SecAgg+ code calls by name to expand a seed into a mask. The client
# mod masks with it, the server workflow unmasks with it: both must be patched, or sums are garbage.
PATCH_POINTS: tuple[tuple[str, str], ...] = (
    ("flwr.client.mod.secure_aggregation.secaggplus_mod", "pseudo_rand_gen"),
    ("flwr.server.workflow.secure_aggregation.secaggplus_workflow", "pseudo_rand_gen"),
)
_ORIGIN = ("flwr.common.secure_aggregation.secaggplus_utils", "pseudo_rand_gen")
# Wire vocabulary: the server names the generator in its fit config; a site masks only if it
# matches.
PRG_KEY = "secagg-prg"
PRG_NAME = "chacha20-hkdf-sha256-v1"
# What a site's attestation says it sent under secure aggregation: a SecAgg+ masked vector,
# its ``update_digest`` being ``masked_digest`` of exactly the bytes the server received.
MASKING_NAME = "secaggplus-" + PRG_NAME
_MAX_RANGE = 2**32
_MAX_QUANTIZATION = 2**30  # Flower's stochastic rounding casts to int32


class UnmaskRefusedError(FedsafeError):
    """A site refused an unmask request that would reveal a masked update (or was malformed)."""


def masked_digest(vector: Sequence[bytes]) -> str:
    """SHA-256 over a masked vector's arrays, each length-prefixed: what a site commits to.

    The server holds these exact bytes, so it checks the commitment without learning the
    update; the site never signs a digest of its unmasked update (that would let anyone
    confirm a guessed update).
    """
    digest = hashlib.sha256(b"fedsafe-masked-vector-v1")
    for blob in vector:
        digest.update(len(blob).to_bytes(8, "big"))
        digest.update(blob)
    return digest.hexdigest()


def chacha_rand_gen(
    seed: bytes, num_range: int, dimensions_list: Sequence[tuple[int, ...]]
) -> list[np.ndarray]:
    """Drop-in for Flower's ``pseudo_rand_gen``: masks from a ChaCha20 keystream of the whole seed.

    Flower folds the seed to 32 bits and feeds numpy's Mersenne Twister, so 2**32 guesses recover
    any mask and the stream is predictable from outputs. Here every byte of the seed keys the
    stream (HKDF, then ChaCha20), each entry is a little-endian uint32 reduced mod ``num_range``
    (a power of two, so unbiased), giving uniform integers in ``[0, num_range)``; the arrays are
    cut from one stream in ``dimensions_list`` order, so both ends derive identical masks.
    """
    if not isinstance(seed, bytes):
        raise TypeError(f"seed must be bytes, got {type(seed).__name__}")
    if isinstance(num_range, bool) or not isinstance(num_range, (int, np.integer)):
        raise TypeError(f"num_range must be int, got {type(num_range).__name__}")
    num_range = int(num_range)
    if not 2 <= num_range <= _MAX_RANGE or num_range & (num_range - 1):
        raise ValueError(f"num_range must be a power of two in [2, 2**32], got {num_range}")
    sizes = [math.prod(dim) for dim in dimensions_list]
    words = np.frombuffer(keystream(seed, 4 * sum(sizes)), dtype="<u4").astype(np.int64)
    words %= num_range
    out: list[np.ndarray] = []
    start = 0
    for dim, size in zip(dimensions_list, sizes, strict=True):
        chunk = words[start : start + size]
        start += size
        out.append(np.array(chunk[0], dtype=np.int64) if len(dim) == 0 else chunk.reshape(dim))
    return out


def _resolve(module: str, name: str) -> tuple[Any, Any]:
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise FedsafeError(
            f"secure aggregation: Flower module {module} is gone; the hardened mask generator was "
            f"written against flwr {FLWR_SERIES}x. Re-read Flower's SecAgg+ code and update "
            "PATCH_POINTS"
        ) from err
    if not hasattr(mod, name):
        raise FedsafeError(
            f"secure aggregation: {module} no longer has {name!r}; the hardened mask generator "
            f"cannot be installed (patch points pinned to flwr {FLWR_SERIES}x)"
        )
    return mod, getattr(mod, name)


def check_patch_points() -> None:
    """Raise unless every patch point exists and holds Flower's generator or ours (nothing else)."""
    import flwr

    if not flwr.__version__.startswith(FLWR_SERIES):
        raise FedsafeError(
            f"secure aggregation is pinned to flwr {FLWR_SERIES}x, found {flwr.__version__}: "
            "re-check PATCH_POINTS against Flower's SecAgg+ modules before running"
        )
    _, original = _resolve(*_ORIGIN)
    for module, name in PATCH_POINTS:
        _, current = _resolve(module, name)
        if current is not original and current is not chacha_rand_gen:
            raise FedsafeError(
                f"secure aggregation: {module}.{name} was replaced by something else ({current!r})"
            )


_lock = threading.Lock()
_depth = 0


def prg_installed() -> bool:
    """True when every patch point currently calls the ChaCha20 generator."""
    return all(_resolve(module, name)[1] is chacha_rand_gen for module, name in PATCH_POINTS)


@contextmanager
def hardened_prg() -> Iterator[None]:
    """Within the block Flower's SecAgg+ client mod and server workflow mask with ChaCha20.

    Patched in the modules that imported the name (not in secaggplus_utils, which they no
    longer consult). Re-entrant and thread-safe by count: the last exit restores Flower's
    generator. Entered per call, not at import, because Ray actors import Flower afresh.
    """
    global _depth
    with _lock:
        if _depth == 0:
            check_patch_points()
            for module, name in PATCH_POINTS:
                setattr(_resolve(module, name)[0], name, chacha_rand_gen)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _, original = _resolve(*_ORIGIN)
                for module, name in PATCH_POINTS:
                    setattr(_resolve(module, name)[0], name, original)


def check_unmask_request(
    *, node_id: int, neighbours: Iterable[int], active: Sequence[int], dead: Sequence[int]
) -> None:
    """Refuse an unmask request that would let the server strip a live node's masks.

    A node named both alive (its private-mask seed share is asked for) and dead (its pairwise
    secret-key share is asked for) gives the server both halves: its masked vector becomes
    plain. Duplicates, strangers and this node itself in the dead list are refused too.
    """
    overlap = sorted(set(active) & set(dead))
    if overlap:
        raise UnmaskRefusedError(
            f"secure aggregation (unmask stage): node(s) {overlap} are listed both alive and "
            "dropped; answering would reveal their masked updates. Expected disjoint alive and "
            "dropped sets; "
            "the server is faulty or malicious: abort the round and investigate it"
        )
    if node_id in set(dead):
        raise UnmaskRefusedError(
            f"secure aggregation (unmask stage): this node ({node_id}) is listed as dropped "
            "while it is answering; expected it among the alive nodes. Refusing to reveal its "
            "own key shares"
        )
    for label, ids in (("alive", active), ("dropped", dead)):
        if len(set(ids)) != len(ids):
            raise UnmaskRefusedError(
                f"secure aggregation (unmask stage): the {label} list repeats node ids "
                f"{sorted(ids)}"
            )
    strangers = sorted((set(active) | set(dead)) - set(neighbours))
    if strangers:
        raise UnmaskRefusedError(
            f"secure aggregation (unmask stage): node(s) {strangers} are not neighbours this node "
            "exchanged keys with; expected only neighbours from the share-keys stage"
        )


class SecAggSizing:
    """The protocol numbers for one run: shares, threshold and the quantisation that fits them."""

    __slots__ = (
        "num_shares",
        "threshold",
        "max_weight",
        "clipping_range",
        "quantization_range",
        "modulus_range",
    )

    def __init__(
        self,
        *,
        num_shares: int,
        threshold: int,
        max_weight: float,
        clipping_range: float,
        quantization_range: int,
        modulus_range: int,
    ) -> None:
        self.num_shares = num_shares
        self.threshold = threshold
        self.max_weight = max_weight
        self.clipping_range = clipping_range
        self.quantization_range = quantization_range
        self.modulus_range = modulus_range

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__slots__}

    @property
    def step(self) -> float:
        """One quantisation level, in parameter units."""
        return 2 * self.clipping_range / self.quantization_range


def secagg_sizing(
    example_counts: Sequence[int],
    *,
    clipping_range: float,
    threshold: int | None = None,
    modulus_range: int = _MAX_RANGE,
) -> SecAggSizing:
    """Shares, threshold, max_weight and quantisation range from the sites' real example counts.

    ``max_weight`` is the largest count, so each site's weight ratio n/max_weight is at most 1
    (no overflow, no clipping of the weighted update) and the largest site uses the full
    quantisation range. The quantisation range is the largest power of two for which the sum of
    every site's quantised values still fits the modulus: the finest step that cannot wrap.
    Every site is every other's neighbour; the threshold defaults to a strict majority.
    """
    n = len(example_counts)
    if n < 3:
        raise FedsafeError(
            f"secure aggregation needs at least 3 sites, got {n}: with 2, each learns the other's "
            "update from the sum. Add sites or turn secure aggregation off"
        )
    if any(c <= 0 for c in example_counts):
        raise FedsafeError(
            "secure aggregation: every site must report > 0 training examples, "
            f"got {list(example_counts)}"
        )
    if not (clipping_range > 0 and math.isfinite(clipping_range)):
        raise FedsafeError(
            f"secure aggregation: clipping range must be a finite float > 0, got {clipping_range}"
        )
    thr = n // 2 + 1 if threshold is None else threshold
    if not 2 <= thr < n:
        raise FedsafeError(
            f"secure aggregation: threshold must be in [2, {n - 1}] for {n} sites, got {thr}"
        )
    quantization = 1 << ((modulus_range // (n + 1)).bit_length() - 1)
    quantization = min(quantization, _MAX_QUANTIZATION)
    return SecAggSizing(
        num_shares=n,
        threshold=thr,
        max_weight=float(max(example_counts)),
        clipping_range=float(clipping_range),
        quantization_range=quantization,
        modulus_range=modulus_range,
    )


def aggregate_error_bound(sizing: SecAggSizing, example_counts: Sequence[int]) -> float:
    """Worst-case gap between the secure aggregate and exact FedAvg, per parameter.

    Each site's weighted value is stochastically rounded to one level (error < 1 step); the
    sum is divided by the total weight ratio; the weight ratios themselves are rounded to
    1/quantization_range (relative error tiny, bounded by clipping_range times it).
    """
    total_ratio = sum(c / sizing.max_weight for c in example_counts)
    rounding = len(example_counts) * sizing.step / total_ratio
    weight = len(example_counts) * sizing.clipping_range / (sizing.quantization_range * total_ratio)
    return rounding + 2 * weight
