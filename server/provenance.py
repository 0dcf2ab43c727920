"""What code and which configuration produced a run: quoted in the ledger's run_started entry."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

from fedsafe.common.config import ExperimentConfig, to_dict
from fedsafe.common.ledger.records import canonical_bytes

__all__ = ["code_version", "config_hash"]


def code_version() -> str:
    """The git commit of this checkout ("+dirty" if it has changes), else the package version."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        try:
            return f"fedsafe {metadata.version('fedsafe')}"
        except metadata.PackageNotFoundError:
            return "fedsafe (unknown version)"


def config_hash(cfg: ExperimentConfig) -> str:
    """SHA-256 of the canonical JSON of the resolved config."""
    return hashlib.sha256(canonical_bytes(to_dict(cfg))).hexdigest()
