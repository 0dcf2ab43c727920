"""A site's 8-bit update: after DP-SGD, from the OS, attested as the coordinator will read it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from fedsafe.client.budget.records import PolicyRefusedError
from fedsafe.client.local_round import _compact
from fedsafe.client.round_request import RoundContext
from fedsafe.client.update_cache import load_update, save_update
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.privacy.randomness import TEST_SEED_ENV
from fedsafe.common.quantise import dequantise, unpack_quantised

CTX = RoundContext(run_id="run-1", server_round=3, purpose="research")
SITE: Any = SimpleNamespace(
    name="cleveland", dataset_id="heart", policy=SimpleNamespace(max_epsilon=10.0)
)


def _states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    sent = {"w": torch.randn(4, 3, generator=gen), "b": torch.zeros(3)}
    trained = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in sent.items()}
    return trained, sent


def _cfg(bits: int) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {"seed": 5, "training": {"update_bits": bits}})


def test_32_bits_sends_the_trained_floats_as_today() -> None:
    trained, sent = _states()
    state, encoded = _compact(_cfg(32), SITE, CTX, trained, sent)
    assert encoded is None and state is trained


def test_8_bits_attests_exactly_what_the_coordinator_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: even the site's own test-only seed does not make the rounding reproducible
    monkeypatch.setenv(TEST_SEED_ENV, "1")
    trained, sent = _states()
    reference = {k: v.numpy() for k, v in sent.items()}
    shapes = {k: tuple(v.shape) for k, v in reference.items()}

    # Act: the same config (seed 5) twice
    state, encoded = _compact(_cfg(8), SITE, CTX, trained, sent)
    _, again = _compact(_cfg(8), SITE, CTX, trained, sent)

    # Assert
    assert encoded is not None and again is not None and encoded != again
    decoded = dequantise(unpack_quantised(encoded, shapes, bits=8, bound=100.0), reference)
    assert all(np.array_equal(decoded[k], state[k].numpy()) for k in state)
    assert all(state[k].dtype == torch.float32 for k in state)


def test_a_non_finite_update_is_withheld_by_a_refusal_naming_the_site() -> None:
    trained, sent = _states()
    trained["w"][0, 0] = float("nan")
    with pytest.raises(PolicyRefusedError, match="site cleveland refused .* does not fit 8 bits"):
        _compact(_cfg(8), SITE, CTX, trained, sent)


def test_a_replayed_round_resends_the_same_codes(tmp_path: Path) -> None:
    trained, sent = _states()
    state, encoded = _compact(_cfg(8), SITE, CTX, trained, sent)
    attestation = {"payload": "{}", "signature": b"sig"}

    save_update(
        tmp_path,
        "run-1",
        3,
        input_digest="d",
        state=state,
        metrics={},
        attestation=attestation,
        encoded=encoded,
    )
    save_update(
        tmp_path, "run-2", 3, input_digest="d", state=state, metrics={}, attestation=attestation
    )
    cached, plain = load_update(tmp_path, "run-1", 3), load_update(tmp_path, "run-2", 3)

    assert cached is not None and cached.encoded == encoded
    assert all(torch.equal(cached.state[k], state[k]) for k in state)
    assert plain is not None and plain.encoded is None
