"""`fedsafe site budget`: show a site what its store says it has spent, per dataset and run."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from fedsafe.client.budget import (
    BudgetStore,
    BudgetStoreError,
    StoreAnchor,
    acknowledge_data,
    acknowledge_store,
)
from fedsafe.common.errors import FedsafeError

__all__ = [
    "add_budget_parser",
    "add_acknowledge_parser",
    "budget_report",
    "format_report",
    "run_budget",
    "run_acknowledge",
]

_COLUMNS = ("dataset", "run", "rounds", "steps", "epsilon after run", "refusals")


def _number(value: float) -> float | str:
    """JSON has no infinity; say it in words rather than emit invalid JSON."""
    return value if math.isfinite(value) else "inf"


def budget_report(store_path: Path, *, keys_dir: Path | None = None) -> dict[str, Any]:
    """The store's summaries as plain data; never creates a store (a missing one is an error).

    With `keys_dir` (the folder holding the site's signing.key) the store is first checked
    against the site's signed head, so edited or deleted rows are an error, not a smaller spend;
    without it the report says it is unverified.
    """
    anchor = StoreAnchor.from_keys_dir(keys_dir) if keys_dir is not None else None
    with BudgetStore.open(Path(store_path), create=False, anchor=anchor) as store:
        datasets = []
        for ds in store.datasets():
            runs = store.runs(ds.dataset_id)
            datasets.append(
                {
                    "dataset_id": ds.dataset_id,
                    "epsilon": _number(ds.epsilon),
                    "delta": ds.delta,
                    "accountant": ds.accountant,
                    "unit_pinned": ds.delta is not None,
                    "fingerprint": ds.fingerprint,
                    "nonprivate_runs": ds.nonprivate_runs,
                    "releases": [
                        {k: r[k] for k in ("run_id", "round", "kind", "mode")}
                        for r in store.releases(ds.dataset_id)
                    ],
                    "runs": [
                        {
                            "run_id": run.run_id,
                            "rounds": run.rounds,
                            "steps": run.steps,
                            "reserved": run.reserved,
                            "refusals": run.refusals,
                            "epsilon_after": _number(run.epsilon_after),
                        }
                        for run in runs
                    ],
                    "rounds": ds.rounds,
                    "steps": ds.steps,
                    "reserved": ds.reserved,
                    "refusals": ds.refusals,
                }
            )
        acks = [
            {
                "time": a.time,
                "kind": a.kind,
                "dataset_id": a.dataset_id,
                "reason": a.reason,
                "detail": a.detail,
            }
            for a in store.acknowledgements()
        ]
    return {
        "store": str(store_path),
        "verified": anchor is not None,
        "datasets": datasets,
        "acknowledgements": acks,
    }


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table, one line per (dataset, run); a '*' marks rounds left reserved."""
    rows: list[tuple[str, ...]] = []
    for ds in report["datasets"]:
        for run in ds["runs"]:
            eps = run["epsilon_after"]
            rows.append(
                (
                    ds["dataset_id"],
                    run["run_id"],
                    f"{run['rounds']}{'*' if run['reserved'] else ''}",
                    str(run["steps"]),
                    eps if isinstance(eps, str) else f"{eps:.4f}",
                    str(run["refusals"]),
                )
            )
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(_COLUMNS)]
    lines = [f"budget store: {report['store']}"]
    line = "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True))
    lines += [line.rstrip(), "  ".join("-" * w for w in widths)]
    for row in rows:
        cells = [
            cell.rjust(w) if i >= 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if not rows:
        lines.append("(no charges or refusals yet)")
    for ds in report["datasets"]:
        if ds["delta"] is not None:
            eps = ds["epsilon"]
            eps_text = eps if isinstance(eps, str) else f"{eps:.4f}"
            lines.append(
                f"{ds['dataset_id']}: epsilon {eps_text} "
                f"at delta={ds['delta']:g} ({ds['accountant']}; unit pinned at the first "
                f"charge), {ds['rounds']} rounds, {ds['steps']} steps over "
                f"{len(ds['runs'])} run(s); rows {str(ds['fingerprint'])[:16]}"
            )
            if ds["nonprivate_runs"]:
                lines.append(
                    f"  NOT PRIVATE: {ds['nonprivate_runs']} run(s) trained without DP on "
                    "these rows; no finite epsilon holds for them any more"
                )
            modes: dict[str, int] = {}
            for release in ds["releases"]:
                modes[release["mode"]] = modes.get(release["mode"], 0) + 1
            if modes:
                shown = ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items()))
                lines.append(f"  evaluations released: {shown}")
    for ack in report.get("acknowledgements", []):
        lines.append(
            f"acknowledged ({ack['kind']}, {ack['time']}): {ack['reason']} {ack['detail']}"
        )
    if any(ds["reserved"] for ds in report["datasets"]):
        lines.append("* a round still 'reserved' (a crash mid-round): counted at its planned steps")
    if not report.get("verified"):
        lines.append(
            "NOT VERIFIED against the site's signed head (give --keys KEYS_DIR): "
            "edited or deleted rows would show here as a smaller spend"
        )
    return "\n".join(lines)


def run_budget(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Print the report; exit status 2 with the reason when the store cannot be read."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        report = budget_report(args.store, keys_dir=args.keys)
    except BudgetStoreError as error:
        print(f"fedsafe site budget: error: {error}", file=err)
        return 2
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        print(format_report(report), file=out)
    return 0


def add_keys_argument(parser: argparse.ArgumentParser) -> None:
    """`--keys KEYS_DIR`: read the store only after checking it against the site's signed head."""
    parser.add_argument(
        "--keys",
        type=Path,
        default=None,
        help="the folder holding the site's signing.key: check the store against its signed head",
    )


def add_budget_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `budget --store PATH [--json]` to a subparsers object; its `func` is `run_budget`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "budget",
        help="show this site's privacy spend per dataset and run",
        description=(
            "Read the site's budget store (never created here) and show, per dataset and run, "
            "rounds, steps, the dataset's composed epsilon after the run, and refusals."
        ),
    )
    parser.add_argument("--store", type=Path, required=True, help="path of the site's budget store")
    add_keys_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_budget)
    return parser


def _anchor_and_store(args: argparse.Namespace) -> tuple[StoreAnchor, Path, Any]:
    """From site.yaml, or from a store path and keys folder (a simulated site's folder)."""
    from fedsafe.common.crypto.pki import load_signing_private_key

    if args.config is not None:
        from fedsafe.client.site_config import load_site_config

        site = load_site_config(args.config)
        anchor = StoreAnchor.in_keys_dir(site.keys_dir, load_signing_private_key(site.signing_key))
        return anchor, site.budget_store, site
    if args.store is None or args.keys is None:
        raise BudgetStoreError("give --config site.yaml, or both --store and --keys")
    key = load_signing_private_key(Path(args.keys) / "signing.key")
    return StoreAnchor.in_keys_dir(Path(args.keys), key), Path(args.store), None


def run_acknowledge(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Record the admin's decision; the site trains again only after it."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        anchor, store_path, site = _anchor_and_store(args)
        if args.data:
            if site is None:
                raise BudgetStoreError("--data needs --config site.yaml (to read the data)")
            from fedsafe.common.config import ExperimentConfig

            data = site.load_data(ExperimentConfig())
            with BudgetStore.open(store_path, create=False, anchor=anchor) as store:
                detail = acknowledge_data(
                    store,
                    dataset_id=site.dataset_id,
                    fingerprint=data.fingerprint,
                    reason=args.reason,
                    records=data.overlap_hashes,
                )
        else:
            detail = acknowledge_store(store_path, anchor, reason=args.reason)
    except FedsafeError as error:
        print(f"fedsafe site acknowledge: error: {error}", file=err)
        return 2
    print(f"acknowledged for {store_path}: {json.dumps(detail)}", file=out)
    return 0


def add_acknowledge_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`acknowledge (--config site.yaml | --store S --keys K) --reason TEXT [--data]`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "acknowledge",
        help="record an admin's decision about a replaced budget store or changed data",
        description=(
            "A site refuses to train when its budget store does not match the head it signed "
            "(deleted, edited, rewound, a new path) or when its rows changed. This records "
            "the admin's decision, with the old spend, and re-signs the head."
        ),
    )
    parser.add_argument("--config", type=Path, help="the site's site.yaml")
    parser.add_argument("--store", type=Path, help="a budget store (with --keys)")
    parser.add_argument("--keys", type=Path, help="the folder holding signing.key (with --store)")
    parser.add_argument("--reason", required=True, help="who decided, and why (kept on record)")
    parser.add_argument(
        "--data", action="store_true", help="accept changed rows of the data set (history kept)"
    )
    parser.set_defaults(func=run_acknowledge)
    return parser
