"""The coordinator's own keys, created once: Ed25519 for ledger heads, X25519 for sealed updates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedsafe.common.crypto.pki import (
    init_server_sealing_key,
    init_server_signing_key,
    load_sealing_private_key,
    load_signing_private_key,
    load_signing_public_key,
)

__all__ = ["CoordinatorKeys"]


@dataclass(frozen=True)
class CoordinatorKeys:
    """The server's keys: Ed25519 (signs ledger heads), X25519 (opens sealed updates).

    Also where enrolled site keys live. Sites pin the public halves from their site kit.
    """

    private: bytes
    public: bytes
    sealing_private: bytes
    site_keys_dir: Path

    @classmethod
    def load_or_create(cls, server_keys_dir: Path, site_keys_dir: Path) -> CoordinatorKeys:
        key = server_keys_dir / "server_signing.key"
        if not key.exists():
            init_server_signing_key(server_keys_dir)
        if not (server_keys_dir / "sealing.key").exists():
            init_server_sealing_key(server_keys_dir)
        return cls(
            load_signing_private_key(key),
            load_signing_public_key(server_keys_dir / "server_signing.pub"),
            load_sealing_private_key(server_keys_dir / "sealing.key"),
            site_keys_dir,
        )
