"""Reading a run folder's files (summary.json, metrics.jsonl, model file) for a report."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from fedsafe.common.errors import FedsafeError

__all__ = ["ReportError", "clean_numbers", "file_sha256", "read_metrics", "read_summary"]


class ReportError(FedsafeError):
    """A report cannot be made: the run folder or store lacks what every report needs."""


def read_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json is the one file a report cannot do without; say which folder lacks it."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ReportError(
            f"{run_dir} has no summary.json: it is written when a run ends; "
            "pass a finished run folder (runs/<name>-<timestamp>)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise ReportError(f"{path} is not a JSON object")
    return data


def read_metrics(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Lines of metrics.jsonl and a note per unreadable line (a crash can cut the last one)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return [], ["no metrics.jsonl in this run folder: per-round figures are missing"]
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            notes.append(f"metrics.jsonl line {number} is not JSON and was skipped")
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, notes


def file_sha256(path: Path) -> str | None:
    """SHA-256 hex of a file, read in chunks; None when it is absent."""
    if not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def clean_numbers(value: Any) -> Any:
    """Strict JSON: infinities become "inf"/"-inf" (meaningful for epsilon), NaN becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): clean_numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_numbers(v) for v in value]
    return value
