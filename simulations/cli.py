"""The `fedsafe` command: one entry, subcommands mounted from the package that owns them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fedsafe.common.errors import FedsafeError

__all__ = ["main", "build_parser", "COMMANDS"]

# (module, function): each function adds its own subcommand(s) to the top-level subparsers.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("fedsafe.simulations.privacy_cli", "add_privacy_parser"),  # fedsafe privacy epsilon|noise|plan
    ("fedsafe.simulations.audit_cli", "add_audit_parser"),  # fedsafe audit verify|export
    ("fedsafe.simulations.report_cli", "add_report_parser"),  # fedsafe report RUN_DIR
    ("fedsafe.simulations.sweep_table", "add_sweep_parser"),  # fedsafe sweep-table DIR
    ("fedsafe.server.cli", "add_server_parsers"),  # fedsafe server|certs|consent ...
    ("fedsafe.client.cli", "add_site_parser"),  # fedsafe site init|start|budget|report
)


def _simulate(argv: list[str]) -> int:
    from fedsafe.simulations import run

    sys.argv = ["fedsafe simulate", *argv]
    run.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsafe", description="Federated learning with site-enforced privacy."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "simulate",
        help="run a local multi-site simulation (Hydra overrides follow)",
        add_help=False,
    )
    for module, function in COMMANDS:
        getattr(importlib.import_module(module), function)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        return _simulate(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FedsafeError as err:
        print(f"fedsafe: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
