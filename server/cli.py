"""Coordinator commands: `fedsafe consent ...`, `fedsafe certs ...` and `fedsafe server ...`."""

from __future__ import annotations

import argparse

from fedsafe.server.consent.cli import add_consent_parser
from fedsafe.server.deploy.certs import add_certs_parser
from fedsafe.server.deploy.cli import add_server_parser

__all__ = ["add_server_parsers"]


def add_server_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Mount every coordinator-side command on the top-level `fedsafe` parser."""
    add_consent_parser(sub)
    add_certs_parser(sub)
    add_server_parser(sub)
