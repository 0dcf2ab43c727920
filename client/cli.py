"""Site commands, under `fedsafe site ...`: what a hospital's or bank's admin runs."""

from __future__ import annotations

import argparse

from fedsafe.client.budget_cli import add_acknowledge_parser, add_budget_parser
from fedsafe.client.deploy import add_start_parser
from fedsafe.client.site_admin import add_approve_parser, add_status_parser
from fedsafe.client.site_kit import add_init_parser
from fedsafe.client.site_report import add_site_report_parser

__all__ = ["add_site_parser"]


def add_site_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`fedsafe site budget|acknowledge|init|start|approve|status|report`."""
    site = sub.add_parser("site", help="commands for a site's admin")
    site_sub = site.add_subparsers(dest="site_command", required=True)
    add_budget_parser(site_sub)
    add_acknowledge_parser(site_sub)
    add_init_parser(site_sub)
    add_start_parser(site_sub)
    add_approve_parser(site_sub)
    add_status_parser(site_sub)
    add_site_report_parser(site_sub)
