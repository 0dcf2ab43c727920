"""What a resume must not change: the bound configuration, its hash, and which keys differ."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fedsafe.common.config import ExperimentConfig, to_dict
from fedsafe.common.ledger.records import canonical_bytes

__all__ = ["BOUND_SECTIONS", "RESOURCE_KEYS", "bound_config", "bound_config_hash", "changed_keys"]

# Everything that changes what the run computes, charges or records.
BOUND_SECTIONS = (
    "seed",
    "dataset",
    "model",
    "privacy",
    "training",
    "strategy",
    "federation",
    "compliance",
    "security",
)
# Where the run executes, not what it computes: a resume on another machine may differ here.
RESOURCE_KEYS = frozenset(
    {
        "training.device",
        "federation.cpus_per_site",
        "federation.gpus_per_site",
        "federation.max_parallel_sites",
    }
)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key in value:
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def bound_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The bound sections of ``cfg`` as plain JSON data (what the checkpoint keeps)."""
    full = to_dict(cfg)
    return json.loads(json.dumps({name: full[name] for name in BOUND_SECTIONS}))  # tuples: lists


def bound_config_hash(bound: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical (RFC 8785) bound configuration."""
    return hashlib.sha256(canonical_bytes(bound)).hexdigest()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def changed_keys(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ (``privacy.target_epsilon: 3.0 -> 20.0``), sorted."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flatten(recorded, "", old)
    _flatten(current, "", new)
    out = []
    for key in sorted(set(old) | set(new)):
        if key in RESOURCE_KEYS or old.get(key, "<absent>") == new.get(key, "<absent>"):
            continue
        out.append(
            f"{key}: {_short(old.get(key, '<absent>'))} -> {_short(new.get(key, '<absent>'))}"
        )
    return out
