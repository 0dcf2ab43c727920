"""8-bit compact updates: error within one step, unbiased rounding, and a strict parser."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import ConfigError, IntegrityError
from fedsafe.common.privacy.randomness import SeededRandomness
from fedsafe.common.quantise import (
    QUANTISED_FORMAT_VERSION,
    compact_update,
    dequantise,
    pack_quantised,
    quantise,
    unpack_quantised,
)
from fedsafe.common.wire import pack_arrays

SHAPES = {"w": (6, 5), "b": (5,)}


def _model(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ref = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    trained = {
        k: v + rng.normal(scale=0.05, size=v.shape).astype(np.float32) for k, v in ref.items()
    }
    return trained, ref


def test_the_round_trip_error_is_at_most_one_quantisation_step() -> None:
    # Arrange
    trained, ref = _model()

    # Act
    update = quantise(trained, ref, bits=8)
    back = dequantise(update, ref)

    # Assert: one step of the grid, plus float32 rounding of reference + change
    for name, value in trained.items():
        step = float(update[name].scale)
        assert step > 0
        slack = 4 * np.finfo(np.float32).eps * (np.abs(value).max() + 1)
        assert np.abs(back[name] - value).max() <= step + slack, name
        assert back[name].dtype == np.float32 and back[name].shape == value.shape


def test_stochastic_rounding_is_unbiased() -> None:
    # Arrange: values deliberately off the grid (the grid is [0, 1] in 255 steps)
    ref = {"w": np.zeros(7, dtype=np.float32)}
    value = np.array([0.0, 0.3 / 255, 0.5 / 255, 0.1234, 0.5, 0.77777, 1.0], dtype=np.float32)
    rng = SeededRandomness(7)

    # Act
    draws = np.stack(
        [dequantise(quantise({"w": value}, ref, rng=rng), ref)["w"] for _ in range(4000)]
    )

    # Assert: the mean is the value within 5 standard errors (a step is 1/255)
    error = np.abs(draws.mean(axis=0) - value)
    assert (error <= 5 * (0.5 / 255) / np.sqrt(len(draws)) + 1e-7).all(), error
    assert len(np.unique(draws[:, 3])) == 2  # it really rounds both ways


def test_rounding_draws_from_the_os_not_from_the_config() -> None:
    # Arrange: two runs of one config, same seed everywhere the coordinator sets one
    cfg = from_dict(ExperimentConfig, {"seed": 0, "training": {"update_bits": 8}})
    trained, ref = _model(cfg.seed)

    # Act
    first = compact_update(trained, ref, bits=cfg.training.update_bits)
    second = compact_update(trained, ref, bits=cfg.training.update_bits)

    # Assert
    assert first[1] != second[1]
    assert not np.array_equal(first[0]["w"], second[0]["w"])


def test_the_packed_update_is_what_the_coordinator_reads_and_a_quarter_of_the_size() -> None:
    trained, ref = _model()
    arrays, blob = compact_update(trained, ref, bits=8)

    read = dequantise(unpack_quantised(blob, SHAPES, bits=8, bound=100.0), ref)

    assert blob[0] == QUANTISED_FORMAT_VERSION
    assert all(np.array_equal(read[k], arrays[k]) for k in SHAPES)  # bit for bit: it is attested
    assert len(blob) < len(pack_arrays(trained))


def test_a_constant_change_and_a_non_finite_one() -> None:
    ref = {"w": np.ones(4, dtype=np.float32)}
    update = quantise({"w": ref["w"] + np.float32(0.25)}, ref)
    assert update["w"].scale == 0 and np.array_equal(dequantise(update, ref)["w"], ref["w"] + 0.25)
    with pytest.raises(ValueError, match="not finite"):
        quantise({"w": np.array([1, np.nan, 1, 1], dtype=np.float32)}, ref)
    with pytest.raises(ValueError, match="float32"):
        quantise({"w": np.ones(4, dtype=np.float64)}, ref)


def _blob(**change: object) -> bytes:
    """An honest 8-bit update with one field of its first tensor's index entry replaced."""
    trained, ref = _model()
    blob = pack_quantised(quantise(trained, ref))
    version, bits, length = struct.unpack_from(">BBI", blob)
    index = json.loads(blob[6 : 6 + length])
    fields = {"name": 0, "dtype": 1, "shape": 2, "offset": 3, "scale": 4}
    for key, value in change.items():
        index[0][fields[key]] = value
    head = json.dumps(index).encode()  # json writes NaN and Infinity, as a hostile peer may
    return struct.pack(">BBI", version, bits, len(head)) + head + blob[6 + length :]


def _with_header(blob: bytes, version: int | None = None, bits: int | None = None) -> bytes:
    head = bytearray(blob)
    if version is not None:
        head[0] = version
    if bits is not None:
        head[1] = bits
    return bytes(head)


HOSTILE = {
    "nan-scale": (_blob(scale=float("nan")), "is not a finite number"),
    "inf-scale": (_blob(scale=float("inf")), "is not a finite number"),
    "huge-scale": (_blob(scale=1e30), "scale 1e+30 is not finite or outside"),
    "overflowing-scale": (_blob(scale=1e300), "scale 1e+300 is not finite or outside"),
    "negative-scale": (_blob(scale=-0.01), "negative or reaches past"),
    "string-scale": (_blob(scale="0.1"), "scale is not a number"),
    "huge-offset": (_blob(offset=-1e6), "offset -1000000.0 is not finite or outside"),
    "range-past-bound": (_blob(offset=99.0, scale=0.1), "reaches past"),
    "wrong-dtype": (_blob(dtype="<f4"), "codes of dtype '<f4', expected '|u1'"),
    "wrong-shape": (_blob(shape=[5, 6]), "shape [5, 6], the global model's is [6, 5]"),
    "huge-shape": (_blob(shape=[10**9, 10**9]), "the global model's is"),
    "unknown-name": (_blob(name="x"), "tensor 'x' is not in the global model"),
    "duplicate-name": (_blob(name="b", shape=[5]), "listed twice"),
    "truncated": (pack_quantised(quantise(*_model()))[:-1], "truncated codes"),
    "trailing": (pack_quantised(quantise(*_model())) + b"\0", "trailing bytes"),
    "float-format": (pack_arrays(_model()[0]), "format version 1, expected 2"),
    "unknown-version": (_with_header(_blob(), version=9), "format version 9, expected 2"),
    "other-width": (_with_header(_blob(), bits=16), "16-bit codes, this run sends 8-bit"),
    "empty": (b"", "unpack_from requires"),
    "index-past-end": (struct.pack(">BBI", 2, 8, 10**6) + b"[]", "index length past the end"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_quantised_update_is_refused(case: str) -> None:
    blob, reason = HOSTILE[case]
    with pytest.raises(IntegrityError, match="not a well-formed 8-bit quantised update") as err:
        unpack_quantised(blob, SHAPES, bits=8, bound=100.0)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("data", "allowed"),
    [
        ({"training": {"update_bits": 16}}, "allowed: 32 | 8"),
        ({"training": {"update_bits": "8"}}, "allowed: 32 | 8"),
        ({"training": {"update_bits": 8}, "security": {"secure_aggregation": True}}, "sealed"),
        ({"training": {"update_bits": 8}, "security": {"sealed_updates": False}}, "sealed"),
        (
            {
                "training": {"update_bits": 8},
                "privacy": {"client_level": {"mode": "distributed"}},
                "security": {"secure_aggregation": True},
            },
            "integer grid",
        ),
    ],
    ids=["16-bits", "text", "secure-aggregation", "unsealed", "distributed-dp"],
)
def test_update_bits_refuses_unknown_widths_and_modes_it_does_not_compose_with(
    data: dict[str, object], allowed: str
) -> None:
    with pytest.raises(ConfigError, match="training.update_bits") as err:
        from_dict(ExperimentConfig, data)
    assert allowed in str(err.value)


def test_update_bits_composes_with_central_dp_and_defaults_to_float() -> None:
    central = {"client_level": {"mode": "central", "target_epsilon": 3.0, "clipping_norm": 0.5}}
    cfg = from_dict(ExperimentConfig, {"training": {"update_bits": 8}, "privacy": central})
    assert cfg.training.update_bits == 8
    assert from_dict(ExperimentConfig, {}).training.update_bits == 32
