"""The `fedsafe` command: one entry, subcommands routed to the package that owns them."""

from __future__ import annotations

import argparse
import sys

from common.errors import FedsafeError

__all__ = ["main"]


def _simulate(argv: list[str]) -> int:
    from simulations import run

    sys.argv = ["fedsafe simulate", *argv]
    run.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsafe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("simulate", help="run a local multi-site simulation (Hydra overrides follow)", add_help=False)
    from simulations.privacy_cli import add_privacy_parser

    add_privacy_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        return _simulate(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except FedsafeError as err:
        print(f"fedsafe: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
