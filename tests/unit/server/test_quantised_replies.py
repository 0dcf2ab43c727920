"""The coordinator reads 8-bit updates as a hostile peer's: a bad one is a drop naming the site."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import numpy as np
import pytest
from conftest import RUN, Federation, Site
from flwr.app import ConfigRecord, Message

from fedsafe.common import crypto, keys
from fedsafe.common.attestation import arrays_digest
from fedsafe.common.quantise import compact_update
from fedsafe.common.wire import pack_arrays, sealing_context
from fedsafe.server.strategy import RecordingStrategy, build_strategy

Tamper = Callable[[bytes], bytes]


def _index(change: dict[str, object]) -> Tamper:
    """Replace fields of the first tensor's index entry (json writes NaN and Infinity)."""

    def tamper(blob: bytes) -> bytes:
        version, bits, length = struct.unpack_from(">BBI", blob)
        index = json.loads(blob[6 : 6 + length])
        for position, value in change.items():
            index[0][int(position)] = value
        head = json.dumps(index).encode()
        return struct.pack(">BBI", version, bits, len(head)) + head + blob[6 + length :]

    return tamper


def _compact_reply(
    tamper: Tamper | None = None, *, float_blob: bool = False, ramp: bool = False
) -> Callable[[Site, Message], list[Message]]:
    """A site's honest update sent as sealed 8-bit codes, attested over what they decode to;
    `tamper` edits the codes after signing (a hostile peer's bytes); `ramp` makes the change
    differ per coordinate (a constant change has scale 0)."""

    def reply(site: Site, msg: Message) -> list[Message]:
        sent = {"w": msg.content[keys.ARRAYS]["w"].numpy()}
        trained = {"w": site.update(msg)[keys.ARRAYS]["w"].numpy()}
        if ramp:
            trained["w"] = trained["w"] + np.linspace(-0.05, 0.05, 8, dtype=np.float32)
        arrays, blob = compact_update(trained, sent, bits=8)
        if float_blob:
            blob = pack_arrays(arrays)
        site.attest = {"update_digest": arrays_digest(arrays)}
        content = site.update(msg)  # the metrics, and the attestation of `arrays`
        del content[keys.ARRAYS]
        server_round = int(msg.content[keys.CONFIG][keys.SERVER_ROUND])
        sealed = crypto.seal(
            SEALING[site.name],
            tamper(blob) if tamper else blob,
            context=sealing_context(RUN, server_round, site.name),
        )
        content[keys.SEALED] = ConfigRecord({"blob": sealed})
        return [Message(content, reply_to=msg)]

    return reply


SEALING: dict[str, bytes] = {}  # site -> the coordinator's sealing key it pinned


def _federation(
    make: Callable[..., Federation], hostile: Callable[[Site, Message], list[Message]]
) -> Federation:
    """Sites a and b honest (changes 0.1 and 0.3), m as given; the run sends 8-bit updates."""
    sites = [Site("a", step=0.1), Site("b", step=0.3), Site("m", step=0.2)]
    sites[0].train_reply = sites[1].train_reply = _compact_reply()
    sites[2].train_reply = hostile
    fed = make(*sites)
    for site in sites:
        SEALING[site.name] = (fed.tmp / "server" / "sealing.pub").read_bytes()
    fed.strategy = RecordingStrategy(
        build_strategy(fed.strategy_cfg),
        fed.strategy.recorder,
        fed.compliance,
        min_sites=fed.strategy_cfg.min_sites,
        roll_call_timeout_s=5.0,
        sealed=True,
        limits=fed.strategy_cfg,
        update_bits=8,
    )
    return fed


def test_honest_8_bit_updates_aggregate_within_one_step(
    federation: Callable[..., Federation],
) -> None:
    fed = _federation(federation, _compact_reply())

    model = fed.run()

    assert fed.strategy.stopped_at is None and "reply dropped" not in fed.errors()
    mean = model["w"].numpy()
    assert np.allclose(mean, 0.2, atol=1e-6)  # a constant change is exact: scale 0


HOSTILE = {
    "nan-scale": (_index({4: float("nan")}), "is not a finite number"),
    "inf-scale": (_index({4: float("inf")}), "is not a finite number"),
    "huge-scale": (_index({4: 1e30}), "scale 1e+30 is not finite or outside"),
    "huge-offset": (_index({3: 1e300}), "offset 1e+300 is not finite or outside"),
    "wrong-dtype": (_index({1: "<f4"}), "codes of dtype '<f4'"),
    "wrong-shape": (_index({2: [9]}), "shape [9], the global model's is [8]"),
    "short": (lambda blob: blob[:-1], "truncated codes"),
    "long": (lambda blob: blob + b"\x00", "trailing bytes"),
    "version": (lambda blob: b"\x07" + blob[1:], "format version 7, expected 2"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_malformed_8_bit_update_is_a_recorded_refusal_naming_the_site(
    federation: Callable[..., Federation], case: str
) -> None:
    tamper, reason = HOSTILE[case]
    fed = _federation(federation, _compact_reply(tamper))

    model = fed.run()

    errors = fed.errors()
    assert "site m: reply dropped: update is not a well-formed 8-bit quantised update" in errors
    assert reason in errors
    assert fed.strategy.stopped_at is None
    [aggregated] = fed.ledger("round_aggregated")
    assert aggregated["sites"] == ["a", "b"]
    assert np.allclose(model["w"].numpy(), 0.2, atol=1e-6)  # (0.1 + 0.3) / 2


def test_a_float_update_in_an_8_bit_run_is_refused(federation: Callable[..., Federation]) -> None:
    fed = _federation(federation, _compact_reply(float_blob=True))

    fed.run()

    assert "site m: reply dropped" in fed.errors()
    assert "format version 1, expected 2" in fed.errors()


def test_codes_that_decode_to_other_arrays_than_attested_are_refused(
    federation: Callable[..., Federation],
) -> None:
    def flip_a_code(blob: bytes) -> bytes:  # well formed, but not what the site signed
        return blob[:-1] + bytes([blob[-1] ^ 0xFF])

    fed = _federation(federation, _compact_reply(flip_a_code, ramp=True))

    fed.run()

    assert "site m: reply dropped: site 'm': attested update_digest" in fed.errors()


def test_a_ramped_8_bit_update_is_adopted_within_one_step(
    federation: Callable[..., Federation],
) -> None:
    fed = _federation(federation, _compact_reply(ramp=True))

    model = fed.run()

    assert "reply dropped" not in fed.errors()
    exact = (0.1 + 0.3 + 0.2 + np.linspace(-0.05, 0.05, 8)) / 3
    assert np.abs(model["w"].numpy() - exact).max() <= 0.1 / 255 + 1e-6
