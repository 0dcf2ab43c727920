"""`fedsafe site approve|status`: which code this site serves, and where it stands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from fedsafe.client.approval import add_approval, check_hash, fab_sha256
from fedsafe.client.site_config import load_site_config
from fedsafe.common.errors import ConfigError, FedsafeError

__all__ = ["add_approve_parser", "add_status_parser", "run_approve", "run_status", "site_status"]


def run_approve(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Add a FAB hash (given, or computed from the .fab file) to site.yaml's approved_code."""
    out = out or sys.stdout
    load_site_config(args.config)  # the file must be a valid site.yaml before it is edited
    if args.fab is not None:
        try:
            digest = fab_sha256(Path(args.fab).read_bytes())
        except OSError as err:
            raise ConfigError("--fab", str(args.fab), f"a readable .fab file ({err})") from None
    else:
        digest = check_hash(args.hash)
    entries = add_approval(args.config, [digest])
    load_site_config(args.config)  # and still one after
    print(f"approved FAB sha256 {digest} in {args.config}", file=out)
    print(f"approved code now: {', '.join(entries)}", file=out)
    print("a running site worker picks this up at its next task", file=out)
    return 0


def site_status(site_yaml: Path) -> dict[str, Any]:
    """The site's identity, where it connects, the code it serves and its budget per dataset."""
    from fedsafe.client.budget import BudgetStore, StoreAnchor

    cfg = load_site_config(site_yaml)
    budget: list[dict[str, Any]] = []
    if cfg.budget_store.exists():
        # Checked against the site's signed head: an edited store is an error, not a smaller spend.
        anchor = StoreAnchor.from_keys_dir(cfg.keys_dir)
        with BudgetStore.open(cfg.budget_store, create=False, anchor=anchor) as store:
            for d in store.datasets():
                budget.append(
                    {
                        "dataset_id": d.dataset_id,
                        "epsilon": d.epsilon,
                        "max_epsilon": cfg.policy.max_epsilon,
                        "rounds": d.rounds,
                        "refusals": d.refusals,
                    }
                )
    return {
        "site": cfg.name,
        "config": str(cfg.path),
        "superlink": cfg.superlink,
        "runtime_api": cfg.runtime_api or "127.0.0.1 (a free port at start)",
        "approved_code": cfg.approved_code.entries(),
        "budget_store": str(cfg.budget_store),
        "budget": budget,
    }


def run_status(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        report = site_status(args.config)
    except FedsafeError as error:  # a store its signed head does not vouch for, a bad site.yaml
        print(f"fedsafe site status: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2), file=out)
        return 0
    print(f"site {report['site']} ({report['config']})", file=out)
    print(f"  SuperLink {report['superlink']}; Runtime API {report['runtime_api']}", file=out)
    approved = report["approved_code"]
    print(f"  approved code ({len(approved)}):", file=out)
    for entry in approved:
        print(f"    {entry}", file=out)
    if not approved:
        print("    none: every run is refused until `fedsafe site approve`", file=out)
    for d in report["budget"]:
        print(
            f"  budget {d['dataset_id']}: epsilon {d['epsilon']:.3f} of {d['max_epsilon']:g}, "
            f"{d['rounds']} round(s), {d['refusals']} refusal(s)",
            file=out,
        )
    return 0


def add_approve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `approve --config site.yaml (--fab FILE | --hash SHA256)`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "approve",
        help="approve a run's code (FAB) so this site serves it",
        description="Add a FAB's SHA-256 to approved_code in site.yaml; the rest of the file "
        "is kept as it is. Compare the hash with the one the coordinator printed "
        "(`fedsafe server submit`) over a channel you trust.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the site's site.yaml")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--fab", type=Path, help="a .fab file (`flwr build`) to hash")
    which.add_argument("--hash", help="a FAB SHA-256 (64 hex digits)")
    parser.set_defaults(func=run_approve)
    return parser


def add_status_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `status --config site.yaml [--json]`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="this site's approved code, connection and budget"
    )
    parser.add_argument("--config", type=Path, required=True, help="the site's site.yaml")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_status)
    return parser
