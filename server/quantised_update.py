"""The coordinator's boundary for compact updates: a site's 8-bit codes back to float32 arrays."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from fedsafe.common.quantise import dequantise, unpack_quantised
from fedsafe.common.wire import unpack_arrays

__all__ = ["update_decoder"]


def update_decoder(
    bits: int, reference: ArrayRecord, *, bound: float
) -> Callable[[bytes], dict[str, Any]]:
    """How to read one opened update of a run sending `bits`-bit updates.

    32: the float arrays as today. 8: the codes are checked against the model the coordinator
    sent (names, shapes, dtype, lengths, each offset and scale finite and within `bound`, the
    run's `strategy.max_update_norm`: no coordinate of an update it accepts moves further),
    then dequantised onto that model, in its order. Any fault raises IntegrityError, which
    the strategy records as a drop naming the site; the usual reply checks (finite values,
    update norm, the attestation over these exact arrays) follow.
    """
    if bits == 32:
        return unpack_arrays
    model = {name: array.numpy() for name, array in reference.items()}
    shapes = {name: tuple(value.shape) for name, value in model.items()}

    def decode(blob: bytes) -> dict[str, Any]:
        update = unpack_quantised(blob, shapes, bits=bits, bound=bound)
        arrays = dequantise(update, model)
        return {name: np.ascontiguousarray(arrays[name]) for name in model}

    return decode
