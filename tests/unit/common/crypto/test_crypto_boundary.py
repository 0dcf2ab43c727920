"""Only common/crypto/_primitives.py may import cryptography.hazmat (DESIGN: one hazmat module)."""

from __future__ import annotations

import re
from pathlib import Path

import fedsafe.common.crypto as crypto_package

ROOT = Path(__file__).resolve().parents[4]
ALLOWED = ROOT / "common" / "crypto" / "_primitives.py"
HAZMAT_IMPORT = re.compile(
    r"^\s*(?:import\s+cryptography\.hazmat"
    r"|from\s+cryptography\.hazmat[\w.]*\s+import"
    r"|from\s+cryptography\s+import\s+[^\n]*\bhazmat\b)",
    re.MULTILINE,
)


def _importers() -> list[Path]:
    found = []
    for package in ("common", "server", "client", "simulations"):
        directory = ROOT / package
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*.py")):
            if HAZMAT_IMPORT.search(path.read_text(encoding="utf-8", errors="replace")):
                found.append(path)
    return found


def test_scan_root_is_the_repository() -> None:
    assert Path(crypto_package.__file__).resolve().parent == ALLOWED.parent


def test_pattern_catches_every_import_form() -> None:
    samples = [
        "import cryptography.hazmat.primitives",
        "from cryptography.hazmat.primitives import hashes",
        "    from cryptography import x509, hazmat",
    ]

    assert all(HAZMAT_IMPORT.search(sample) for sample in samples)


def test_only_primitives_imports_hazmat() -> None:
    importers = _importers()

    assert importers == [ALLOWED]
