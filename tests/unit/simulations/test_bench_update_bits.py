"""The compact-updates bench: its byte figures, and configs that differ only in update_bits."""

from __future__ import annotations

from pathlib import Path

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.simulations.bench import BENCHES, update_bits


def test_8_bit_updates_are_under_a_third_of_the_float_bytes() -> None:
    rows = {r.name: r for r in update_bits.bytes_rows()}

    for label, _, _ in update_bits.MODELS:
        plain = rows[f"bytes per update, 32-bit, {label}"]
        compact = rows[f"bytes per update, 8-bit, {label}"]
        assert compact.baseline == plain.name and compact.met is True
        assert compact.median < plain.median / 3 + 300  # the index and the seal's fixed bytes
    assert "update_bits" in BENCHES


def test_the_accuracy_runs_differ_only_in_update_bits(tmp_path: Path) -> None:
    configs = {
        bits: update_bits.accuracy_config(tmp_path, bits=bits, rounds=2, tag="t")
        for bits in (32, 8)
    }

    built = {bits: from_dict(ExperimentConfig, cfg) for bits, cfg in configs.items()}

    assert built[8].training.update_bits == 8 and built[32].training.update_bits == 32
    assert {**configs[8], "training": {}} == {**configs[32], "training": {}}
