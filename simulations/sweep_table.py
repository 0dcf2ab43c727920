"""`fedsafe sweep-table DIR`: the runs of a sweep as one table per federation.

Reads every summary.json under DIR (a Hydra multirun folder, or any folder of run folders) and
prints, per federation and privacy setting (off / epsilon 1 / 3 / 8 ...), the mean and spread
over the runs of: pooled accuracy, balanced accuracy and AUROC, the worst site's accuracy, the
fairness gap and the mean of the sites' accuracies (FLamby's metric). Only figures the sites
released are read; a run that stopped early or in which no site trained is listed, not averaged.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = ["COLUMNS", "Cell", "add_sweep_parser", "collect", "format_tables"]

# (label, how to read it from a summary)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "global.accuracy"),
    ("bal.acc", "global.balanced-accuracy"),
    ("AUROC", "global.auroc"),
    ("worst site", "fairness.worst"),
    ("gap", "fairness.gap"),
    ("site mean", "fairness.mean"),
)


@dataclass(frozen=True)
class Cell:
    """Mean and spread (sample standard deviation) of one figure over the runs."""

    mean: float
    spread: float
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "-"
        return f"{self.mean:.3f} ± {self.spread:.3f}" if self.n > 1 else f"{self.mean:.3f}"


def _read(summary: dict[str, Any], path: str) -> float | None:
    node: Any = summary
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return float(node) if isinstance(node, int | float) and math.isfinite(node) else None


def _privacy_label(summary: dict[str, Any]) -> str:
    privacy = summary.get("privacy") or {}
    if not privacy.get("enabled"):
        return "off"
    if privacy.get("target_epsilon") is not None:
        return f"epsilon {float(privacy['target_epsilon']):g}"
    return f"noise {float(privacy.get('noise_multiplier') or 0):g}"


def _federation(summary: dict[str, Any]) -> str:
    config = summary.get("config") or {}
    name = (config.get("federation") or {}).get("name") or summary.get("dataset") or "?"
    protocol = (config.get("dataset") or {}).get("protocol")
    return f"{name} ({protocol} protocol)" if protocol and protocol != "fedsafe" else str(name)


def collect(folder: Path) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], list[str]]:
    """Summaries grouped by federation, then privacy; and the runs left out (and why)."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    left_out = []
    for path in sorted(Path(folder).rglob("summary.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            left_out.append(f"{path.parent}: unreadable summary ({err})")
            continue
        if not isinstance(summary, dict):
            left_out.append(f"{path.parent}: summary is not a JSON object")
            continue
        if summary.get("stopped_early") or not summary.get("rounds_completed"):
            left_out.append(f"{path.parent}: stopped early or no round completed")
            continue
        groups[_federation(summary)][_privacy_label(summary)].append(summary)
    return groups, left_out


def _cell(values: Iterable[float | None]) -> Cell:
    known = [v for v in values if v is not None]
    if not known:
        return Cell(math.nan, math.nan, 0)
    spread = statistics.stdev(known) if len(known) > 1 else 0.0
    return Cell(statistics.fmean(known), spread, len(known))


def _order(label: str) -> tuple[int, float]:
    if label == "off":
        return (0, 0.0)
    return (1, float(label.split()[-1]))


def format_tables(groups: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """One fixed-width table per federation: a row per privacy setting, mean ± spread."""
    out = []
    for federation in sorted(groups):
        rows = [("privacy", "runs", *(label for label, _ in COLUMNS))]
        for label in sorted(groups[federation], key=_order):
            runs = groups[federation][label]
            cells = [str(_cell(_read(s, path) for s in runs)) for _, path in COLUMNS]
            rows.append((label, str(len(runs)), *cells))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out.append(federation)
        for i, row in enumerate(rows):
            out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    return "\n".join(out)


def run_sweep_table(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Print the tables; 2 when the folder holds no finished run."""
    out = out or sys.stdout
    groups, left_out = collect(args.folder)
    for line in left_out:
        print(f"left out: {line}", file=sys.stderr)
    if not groups:
        print(f"fedsafe sweep-table: no finished run under {args.folder}", file=sys.stderr)
        return 2
    print(format_tables(groups), file=out)
    return 0


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `sweep-table DIR`; `func` is `run_sweep_table`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sweep-table",
        help="a sweep's runs as one table per federation (mean ± spread over the runs)",
    )
    parser.add_argument("folder", type=Path, help="a multirun folder, or any folder of runs")
    parser.set_defaults(func=run_sweep_table)
    return parser
