"""What a site signs each round (attestation) and at the start of a run (identity), and the checks.

Both travel in a ConfigRecord as {"payload": canonical JSON text, "signature": bytes}; the
server verifies the signature with the site's enrolled Ed25519 key before it believes a word.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsafe.common import crypto
from fedsafe.common.errors import IntegrityError
from fedsafe.common.ledger.records import canonical_bytes, canonical_json

__all__ = [
    "arrays_digest",
    "sign_statement",
    "open_statement",
    "attestation_payload",
    "identity_payload",
    "ATTESTATION",
    "IDENTITY",
]

# Domain separation lives inside the signed payload ("statement"), so a ledger verifier
# checks a site's signature over canonical_bytes(payload) with nothing else to know.
ATTESTATION = "fedsafe-attestation-v1"
IDENTITY = "fedsafe-identity-v1"


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in order: the update a site vouches for."""
    digest = hashlib.sha256()
    for name, value in arrays.items():
        array = np.ascontiguousarray(value)
        header = json.dumps([name, array.dtype.str, list(array.shape)], separators=(",", ":"))
        digest.update(header.encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def attestation_payload(
    *,
    site: str,
    run_id: str,
    server_round: int,
    epsilon: float | None,
    delta: float | None,
    steps: int,
    update_digest: str | None,
    noise_multiplier: float | None = None,
    sample_rate: float | None = None,
    num_examples: int | None = None,
    randomness: str | None = None,
    release: str | None = None,
    refused: bool = False,
) -> dict[str, Any]:
    """The ledger's attestation contract (common/ledger/records.py), plus the run id.

    `noise_multiplier` and `sample_rate` are what the site really trained with, so an auditor
    can recompute the round's charge; `num_examples` is the aggregation weight the site claims,
    signed so that the coordinator can bound it against what it enrolled. `randomness` names
    where the noise came from ("os-csprng"; "seeded-test-only" marks a release as not private);
    `release` the site's evaluation release policy (exact, rounded, dp or off).
    """
    return {
        "statement": ATTESTATION,
        "site": site,
        "run_id": run_id,
        "round": server_round,
        "epsilon": epsilon,
        "delta": delta,
        "steps": steps,
        "update_digest": update_digest,
        "noise_multiplier": noise_multiplier,
        "sample_rate": sample_rate,
        "num_examples": num_examples,
        "randomness": randomness,
        "release": release,
        "refused": refused,
    }


def identity_payload(*, site: str, run_id: str, purpose: str) -> dict[str, Any]:
    """A site's answer to "who is there": bound to this run so it cannot be replayed."""
    return {"statement": IDENTITY, "site": site, "run_id": run_id, "purpose": purpose}


def sign_statement(payload: dict[str, Any], private_pem: bytes) -> dict[str, Any]:
    """A ConfigRecord body: the canonical payload text and the site's signature over it."""
    text = canonical_json(payload)
    return {"payload": text, "signature": crypto.sign(private_pem, text.encode())}


def open_statement(statement: str, record: Mapping[str, Any], public_pem: bytes) -> dict[str, Any]:
    """Verify and parse a signed statement of the expected kind; raises IntegrityError otherwise."""
    try:
        text = str(record["payload"])
        signature = record["signature"]
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("statement is missing its payload or signature") from None
    if not isinstance(signature, bytes):  # bytes(n) of an int n would allocate n bytes
        raise IntegrityError("statement signature is not bytes")
    crypto.verify(public_pem, text.encode(), signature)
    payload = json.loads(text)
    if canonical_bytes(payload) != text.encode() or payload.get("statement") != statement:
        raise IntegrityError("statement is not a canonical " + statement)
    return payload
