"""The coordinator's checks on what sites send: sealed updates, attestations, identities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedsafe.common import crypto, keys
from fedsafe.common.attestation import (
    ATTESTATION,
    arrays_digest,
    attestation_payload,
    identity_payload,
    open_statement,
    sign_statement,
)
from fedsafe.common.config import PrivacyConfig
from fedsafe.common.errors import IntegrityError
from fedsafe.common.ledger import Ledger
from fedsafe.common.privacy.accountants import epsilon_for
from fedsafe.common.wire import pack_arrays, sealing_context
from fedsafe.server.compliance import Compliance, CoordinatorKeys, RejectedUpdateError
from fedsafe.server.consent import ConsentRegistry

RUN = "run-1"
ARRAYS = {"w": np.ones((2, 2), dtype=np.float32)}


@pytest.fixture
def site_keys() -> tuple[bytes, bytes]:
    return crypto.generate_signing_key()


@pytest.fixture
def compliance(tmp_path: Path, site_keys: tuple[bytes, bytes]) -> Compliance:
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "cleveland.pub").write_bytes(site_keys[1])
    c = Compliance(
        run_id=RUN,
        purpose="research",
        dataset="heart_disease",
        jurisdictions=None,
        ledger=Ledger.open(tmp_path / "ledger.sqlite"),
        witness=tmp_path / "witness.json",
        coordinator=CoordinatorKeys.load_or_create(tmp_path / "server", tmp_path / "sites"),
        consent=ConsentRegistry.open(tmp_path / "consent.sqlite"),
    )
    c.roster[7] = "cleveland"
    return c


def _sealing_public(tmp_path: Path) -> bytes:
    return (tmp_path / "server" / "sealing.pub").read_bytes()


def _sealed(
    tmp_path: Path,
    *,
    run: str = RUN,
    rnd: int = 1,
    site: str = "cleveland",
    key: bytes | None = None,
) -> RecordDict:
    blob = crypto.seal(
        key or _sealing_public(tmp_path),
        pack_arrays(ARRAYS),
        context=sealing_context(run, rnd, site),
    )
    return RecordDict({keys.SEALED: ConfigRecord({"blob": blob})})


def test_a_sealed_update_opens_into_the_arrays(compliance: Compliance, tmp_path: Path) -> None:
    content = _sealed(tmp_path)
    compliance.unseal(1, 7, content, required=True)
    assert keys.SEALED not in content
    assert np.array_equal(content[keys.ARRAYS]["w"].numpy(), ARRAYS["w"])


@pytest.mark.parametrize(
    "kwargs",
    [{"rnd": 2}, {"run": "run-0"}, {"site": "hungary"}],
    ids=["replayed-round", "other-run", "other-site"],
)
def test_a_replayed_or_misdirected_update_is_refused(
    compliance: Compliance, tmp_path: Path, kwargs: dict
) -> None:  # type: ignore[type-arg]
    with pytest.raises(RejectedUpdateError, match="does not open"):
        compliance.unseal(1, 7, _sealed(tmp_path, **kwargs), required=True)


def test_an_update_sealed_to_another_key_is_refused(compliance: Compliance, tmp_path: Path) -> None:
    _, other = crypto.generate_sealing_key()
    with pytest.raises(RejectedUpdateError, match="does not open"):
        compliance.unseal(1, 7, _sealed(tmp_path, key=other), required=True)


@pytest.mark.parametrize("position", [0, 5, 40, -1], ids=["version", "header", "ciphertext", "tag"])
def test_a_flipped_byte_is_refused(compliance: Compliance, tmp_path: Path, position: int) -> None:
    content = _sealed(tmp_path)
    blob = bytearray(bytes(content[keys.SEALED]["blob"]))
    blob[position] ^= 0x01
    content[keys.SEALED] = ConfigRecord({"blob": bytes(blob)})
    with pytest.raises(RejectedUpdateError, match="does not open"):
        compliance.unseal(1, 7, content, required=True)


@pytest.mark.parametrize(
    "blob", [-1, 2**40, "blob", [1, 2, 3]], ids=["negative", "huge", "str", "ints"]
)
def test_a_sealed_blob_that_is_not_bytes_is_refused(compliance: Compliance, blob: object) -> None:
    # bytes(n) of an int n is n zero bytes: -1 raised ValueError, 2**40 would allocate a terabyte
    content = RecordDict({keys.SEALED: ConfigRecord({"blob": blob})})
    with pytest.raises(RejectedUpdateError, match="does not open"):
        compliance.unseal(1, 7, content, required=True)


def test_plaintext_is_refused_when_sealing_is_required(compliance: Compliance) -> None:
    content = RecordDict({keys.ARRAYS: ArrayRecord({"w": Array(ARRAYS["w"])})})
    with pytest.raises(RejectedUpdateError, match="was not sealed"):
        compliance.unseal(1, 7, content, required=True)
    compliance.unseal(1, 7, content, required=False)  # allowed when the run does not seal


def _attested(
    signing_private: bytes, metrics_override: dict[str, float] | None = None, **override: object
) -> RecordDict:
    digest = arrays_digest(ARRAYS)
    epsilon = epsilon_for([(1.0, 0.1, 8)], delta=1e-5)
    payload = attestation_payload(
        site="cleveland",
        run_id=RUN,
        server_round=1,
        epsilon=epsilon,
        delta=1e-5,
        steps=8,
        update_digest=digest,
        noise_multiplier=1.0,
        sample_rate=0.1,
        num_examples=80,
    )
    payload.update(override)
    metrics = {
        keys.NUM_EXAMPLES: 80.0,
        keys.LOSS: 0.5,
        keys.EPSILON: epsilon,
        keys.DELTA: 1e-5,
        keys.STEPS: 8.0,
        keys.NOISE_MULTIPLIER: 1.0,
        keys.SAMPLE_RATE: 0.1,
    } | (metrics_override or {})
    return RecordDict(
        {
            keys.ARRAYS: ArrayRecord({"w": Array(ARRAYS["w"])}),
            keys.METRICS: MetricRecord(metrics),
            keys.ATTESTATION: ConfigRecord(sign_statement(payload, signing_private)),
        }
    )


def test_a_valid_attestation_is_accepted(
    compliance: Compliance, site_keys: tuple[bytes, bytes]
) -> None:
    assert compliance.verify_update(1, 7, _attested(site_keys[0])) == "cleveland"


@pytest.mark.parametrize("signature", [-1, 2**40, "list"], ids=["negative", "huge", "ints"])
def test_a_statement_signature_that_is_not_bytes_is_refused(
    site_keys: tuple[bytes, bytes], signature: object
) -> None:
    statement = dict(_attested(site_keys[0])[keys.ATTESTATION])
    if signature == "list":  # the genuine signature's bytes, as a list of ints
        signature = list(statement["signature"])
    with pytest.raises(IntegrityError):
        open_statement(ATTESTATION, statement | {"signature": signature}, site_keys[1])


def test_a_forged_attestation_is_dropped(compliance: Compliance) -> None:
    forger, _ = crypto.generate_signing_key()
    with pytest.raises(RejectedUpdateError, match="attestation signature does not verify"):
        compliance.verify_update(1, 7, _attested(forger))


def test_an_attestation_for_other_arrays_is_dropped(
    compliance: Compliance, site_keys: tuple[bytes, bytes]
) -> None:
    with pytest.raises(RejectedUpdateError, match="attested update_digest"):
        compliance.verify_update(1, 7, _attested(site_keys[0], update_digest="0" * 64))


def test_a_missing_attestation_is_dropped(
    compliance: Compliance, site_keys: tuple[bytes, bytes]
) -> None:
    content = _attested(site_keys[0])
    del content[keys.ATTESTATION]
    with pytest.raises(RejectedUpdateError, match="has no attestation"):
        compliance.verify_update(1, 7, content)


def test_an_identity_signed_by_another_key_is_refused(compliance: Compliance) -> None:
    forger, _ = crypto.generate_signing_key()
    content = RecordDict(
        {
            keys.SITE: ConfigRecord({keys.SITE_NAME: "cleveland"}),
            keys.IDENTITY: ConfigRecord(
                sign_statement(
                    identity_payload(site="cleveland", run_id=RUN, purpose="research"), forger
                )
            ),
        }
    )
    compliance.roster.clear()
    with pytest.raises(RejectedUpdateError, match="identity does not verify"):
        compliance.admit_identity(3, content)
    assert 3 not in compliance.roster


def test_an_unenrolled_site_is_refused_at_roll_call(
    compliance: Compliance, site_keys: tuple[bytes, bytes]
) -> None:
    content = RecordDict(
        {
            keys.SITE: ConfigRecord({keys.SITE_NAME: "mallory"}),
            keys.IDENTITY: ConfigRecord(
                sign_statement(
                    identity_payload(site="mallory", run_id=RUN, purpose="research"), site_keys[0]
                )
            ),
        }
    )
    with pytest.raises(RejectedUpdateError, match="'mallory' is not enrolled"):
        compliance.admit_identity(4, content)


ONE_ROUND = epsilon_for([(1.0, 0.1, 8)], delta=1e-5)


@pytest.mark.parametrize(
    ("override", "metrics", "reason"),
    [
        ({"epsilon": None}, {}, "attested epsilon is null in a run with privacy enabled"),
        # RFC 8785 spells -1.0 as -1
        ({"epsilon": -1.0}, {keys.EPSILON: -1.0}, "attested epsilon -1 is negative"),
        ({"epsilon": "1.0"}, {}, "attested epsilon '1.0' is not a number"),
        ({"epsilon": ONE_ROUND / 2}, {keys.EPSILON: ONE_ROUND / 2}, "is below"),
        ({"epsilon": ONE_ROUND * 2}, {}, "attested epsilon"),
        ({"steps": 9}, {}, "attested steps 9.0 != reported steps 8.0"),
        ({"steps": 8.5}, {keys.STEPS: 8.5}, "attested steps 8.5 is not an integer"),
        ({"noise_multiplier": 2.0}, {}, "attested noise_multiplier 2.0 != reported"),
        ({"noise_multiplier": None}, {}, "attested noise_multiplier None is not a number"),
        ({"noise_multiplier": 0.0}, {keys.NOISE_MULTIPLIER: 0.0}, "is below inf"),
        ({"sample_rate": 0.2}, {}, "attested sample_rate 0.2 != reported"),
        ({"sample_rate": 2.0}, {keys.SAMPLE_RATE: 2.0}, "sample_rate 2.0 is above 1"),
        ({"delta": 1e-3}, {keys.DELTA: 1e-3}, "!= the run's privacy.delta"),
        ({"num_examples": 81}, {}, "attested num_examples 81.0 != reported num-examples 80.0"),
        ({"refused": True}, {}, "not of a completed round"),
    ],
    ids=[
        "eps-null",
        "eps-negative",
        "eps-string",
        "eps-below-one-round",
        "eps-differs-from-metric",
        "steps-differ",
        "steps-float",
        "noise-differs",
        "noise-missing",
        "noise-zero",
        "rate-differs",
        "rate-above-one",
        "delta-other",
        "count-differs",
        "refused",
    ],
)
def test_an_attestation_inconsistent_with_itself_the_metrics_or_the_run_is_refused(
    compliance: Compliance,
    site_keys: tuple[bytes, bytes],
    override: dict[str, object],
    metrics: dict[str, float],
    reason: str,
) -> None:
    with pytest.raises(RejectedUpdateError, match="site 'cleveland'") as err:
        compliance.verify_update(1, 7, _attested(site_keys[0], metrics, **override))
    assert reason in str(err.value)


def test_a_cumulative_epsilon_above_one_round_is_accepted(
    compliance: Compliance, site_keys: tuple[bytes, bytes]
) -> None:
    more = {keys.EPSILON: ONE_ROUND * 3}
    assert compliance.verify_update(1, 7, _attested(site_keys[0], more, epsilon=ONE_ROUND * 3))


def test_an_attestation_without_epsilon_is_refused_not_a_key_error(
    compliance: Compliance, site_keys: tuple[bytes, bytes]
) -> None:
    content = _attested(site_keys[0])
    payload = json.loads(str(content[keys.ATTESTATION]["payload"]))
    del payload["epsilon"]
    content[keys.ATTESTATION] = ConfigRecord(sign_statement(payload, site_keys[0]))
    with pytest.raises(RejectedUpdateError, match="attested epsilon is null"):
        compliance.verify_update(1, 7, content)


def test_without_privacy_a_null_epsilon_is_accepted(
    compliance: Compliance, site_keys: tuple[bytes, bytes]
) -> None:
    compliance.privacy = PrivacyConfig(enabled=False, target_epsilon=None)
    content = _attested(
        site_keys[0],
        {keys.EPSILON: math.inf, keys.DELTA: 0.0, keys.NOISE_MULTIPLIER: 0.0},
        epsilon=None,
        delta=None,
        noise_multiplier=None,
        sample_rate=None,
    )
    assert compliance.verify_update(1, 7, content) == "cleveland"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_signed_non_finite_epsilon_is_refused(
    compliance: Compliance, site_keys: tuple[bytes, bytes], value: str
) -> None:
    content = _attested(site_keys[0])
    payload = json.loads(str(content[keys.ATTESTATION]["payload"]))
    payload["epsilon"] = float(value)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))  # Python writes NaN
    signature = crypto.sign(site_keys[0], text.encode())
    content[keys.ATTESTATION] = ConfigRecord({"payload": text, "signature": signature})
    with pytest.raises(RejectedUpdateError, match="attestation is not canonical JSON"):
        compliance.verify_update(1, 7, content)
