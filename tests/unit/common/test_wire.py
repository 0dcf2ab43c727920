"""The array bundle a sealed update carries: exact round trip, and corruption is refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedsafe.common.errors import IntegrityError
from fedsafe.common.wire import pack_arrays, sealing_context, unpack_arrays


def _arrays() -> dict[str, np.ndarray]:
    return {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1.5, -2.0], dtype=np.float64),
    }


def test_round_trip_keeps_names_order_dtypes_shapes_and_values() -> None:
    back = unpack_arrays(pack_arrays(_arrays()))
    assert list(back) == ["w", "b"]
    for name, value in _arrays().items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value)


def test_first_byte_is_the_format_version() -> None:
    assert pack_arrays(_arrays())[0] == 1


@pytest.mark.parametrize(
    "mutate",
    [lambda b: b[:-1], lambda b: b + b"\x00", lambda b: b"\x02" + b[1:], lambda b: b[:3]],
    ids=["truncated", "trailing", "unknown-version", "header-only"],
)
def test_corrupt_bundles_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError, match="not a well-formed array bundle"):
        unpack_arrays(mutate(pack_arrays(_arrays())))


def test_sealing_context_binds_run_round_and_site() -> None:
    base = sealing_context("run-1", 2, "cleveland")
    assert (
        len(
            {
                base,
                sealing_context("run-2", 2, "cleveland"),
                sealing_context("run-1", 3, "cleveland"),
                sealing_context("run-1", 2, "hungary"),
            }
        )
        == 4
    )
