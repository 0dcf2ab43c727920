"""Compact updates: bytes per sealed update at 32 vs 8 bits, and what 8 bits cost in accuracy
on the hospitals (both measured in this run)."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.torch import load_file

from fedsafe.simulations.bench.rows import Row
from fedsafe.simulations.bench.spawn import run_worker

if TYPE_CHECKING:
    from fedsafe.common.config.limits import ModelName

__all__ = ["run", "bytes_rows", "accuracy_config"]

BENCH = "update_bits"
# (label, dataset, model): the hospitals' default MLP, and the digits CNN (a bigger model)
MODELS: tuple[tuple[str, str, ModelName], ...] = (
    ("hospitals mlp", "heart_disease", "mlp"),
    ("digits cnn", "digits", "cnn"),
)


def _sealed_sizes(dataset: str, model_name: ModelName) -> tuple[int, int, int]:
    """(parameters, sealed float32 update bytes, sealed 8-bit update bytes) for one model,
    sealed exactly as a site seals its reply."""
    from fedsafe.common import crypto
    from fedsafe.common.config import DatasetConfig, ModelConfig
    from fedsafe.common.data import dataset_info
    from fedsafe.common.models import model_for
    from fedsafe.common.quantise import compact_update
    from fedsafe.common.wire import pack_arrays, sealing_context

    model = model_for(ModelConfig(name=model_name), dataset_info(dataset, DatasetConfig()))
    sent = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)  # a stand-in update: only its size matters here
    trained = {
        k: v + rng.normal(scale=0.01, size=v.shape).astype(np.float32) for k, v in sent.items()
    }
    _, codes = compact_update(trained, sent, bits=8)
    _, public = crypto.generate_sealing_key()
    context = sealing_context("bench", 1, "site")
    plain = len(crypto.seal(public, pack_arrays(trained), context=context))
    compact = len(crypto.seal(public, codes, context=context))
    return sum(v.size for v in sent.values()), plain, compact


def bytes_rows() -> list[Row]:
    """One row per model and width; the 8-bit row carries its ratio to the 32-bit one."""
    rows = []
    for label, dataset, model_name in MODELS:
        params, plain, compact = _sealed_sizes(dataset, model_name)
        base = f"bytes per update, 32-bit, {label}"
        note = f"{params:,} parameters, sealed (X25519 + AES-GCM) as a site sends it"
        rows.append(Row(BENCH, base, "bytes", plain, plain, 1, note=note))
        rows.append(
            Row(
                BENCH,
                f"bytes per update, 8-bit, {label}",
                "bytes",
                compact,
                compact,
                1,
                baseline=base,
                ratio_min=compact / plain,
                ratio_median=compact / plain,
                target="<= 0.35x",
                met=compact / plain <= 0.35,
                note="codes + per-tensor offset and scale, sealed the same way",
            )
        )
    return rows


def accuracy_config(runs_dir: Path, *, bits: int, rounds: int, tag: str) -> dict[str, Any]:
    """The four hospitals at epsilon 8, fresh budgets; only training.update_bits differs."""
    return {
        "name": tag,
        "runs_dir": str(runs_dir),
        "training": {"rounds": rounds, "update_bits": bits},
        "privacy": {"target_epsilon": 8.0},
        "strategy": {"min_sites": 3},
        "federation": {"fresh_budget": True},
    }


@contextlib.contextmanager
def _seeded_noise(seed: int) -> Iterator[None]:
    """The sites' test-only noise seed for one pair: both widths draw the same DP noise and
    batches, so the pair differs by the 8-bit rounding alone (which always draws from the OS)."""
    from fedsafe.common.privacy.randomness import TEST_SEED_ENV

    saved = os.environ.get(TEST_SEED_ENV)
    os.environ[TEST_SEED_ENV] = str(seed)
    try:
        yield
    finally:
        if saved is None:
            del os.environ[TEST_SEED_ENV]
        else:
            os.environ[TEST_SEED_ENV] = saved


def _accuracy_rows(tmp: Path, *, rounds: int, pairs: int) -> list[Row]:
    """Pairs of runs at 32 and 8 bits on the same seeded DP noise; final global accuracy."""
    accuracy: dict[int, list[float]] = {32: [], 8: []}
    balanced: dict[int, list[float]] = {32: [], 8: []}
    models: dict[int, dict[str, Any]] = {}
    moved: list[float] = []  # per pair: the largest weight difference of the two final models
    notes = []
    for pair in range(pairs):
        for bits in (32, 8):
            tag = f"bits{bits}-{pair}"
            cfg = accuracy_config(tmp / tag, bits=bits, rounds=rounds, tag=tag)
            with _seeded_noise(1000 + pair):
                result = run_worker("fedsafe", cfg, tmp / "work", tag)
            summary_path = tmp / "work" / tag / "summary.json"
            if "error" in result or not summary_path.exists():
                notes.append(f"{tag} FAILED: {result.get('error', '')[-300:]}")
                continue
            summary = json.loads(summary_path.read_text())
            pooled = summary["global"]
            models[bits] = load_file(str(summary_path.parent / summary["model"]["path"]))
            accuracy[bits].append(float(pooled["accuracy"]))
            balanced[bits].append(float(pooled.get("balanced-accuracy", float("nan"))))
        if len(models) == 2:
            moved.append(max(float((models[32][k] - models[8][k]).abs().max()) for k in models[32]))
        models.clear()

    def figure(bits: int) -> tuple[float, float]:
        values = accuracy[bits]
        return (min(values), statistics.median(values)) if values else (float("nan"),) * 2

    low32, med32 = figure(32)
    low8, med8 = figure(8)
    base = "accuracy, 32-bit updates, hospitals eps 8"
    spread = (
        f"{rounds} rounds, {pairs} pair(s); each pair shares its (test-only, seeded) DP noise, "
        "so it differs by the 8-bit rounding alone"
    )
    cost = med32 - med8
    return [
        Row(BENCH, base, "accuracy", low32, med32, len(accuracy[32]), note=spread),
        Row(
            BENCH,
            "accuracy, 8-bit updates, hospitals eps 8",
            "accuracy",
            low8,
            med8,
            len(accuracy[8]),
            baseline=base,
            ratio_min=low8 / low32,
            ratio_median=med8 / med32,
            target=">= 0.95x",
            met=med8 / med32 >= 0.95,
            note="; ".join(notes)
            or (
                f"accuracy cost (32 - 8 bit, median) {cost:+.3f}; balanced accuracy 32-bit "
                f"{[round(b, 3) for b in balanced[32]]}, 8-bit {[round(b, 3) for b in balanced[8]]}"
                f"; final models differ by at most {[f'{m:.2g}' for m in moved]} per weight"
            ),
            extra={"accuracy": accuracy, "balanced_accuracy": balanced, "max_weight_diff": moved},
        ),
    ]


def run(*, quick: bool = False) -> list[Row]:
    """Bytes per update for two models, then the hospitals' accuracy at 32 vs 8 bits."""
    rows = bytes_rows()
    with tempfile.TemporaryDirectory(prefix="fedsafe-bits-") as name:
        rows += _accuracy_rows(Path(name), rounds=3 if quick else 10, pairs=1 if quick else 2)
    return rows
