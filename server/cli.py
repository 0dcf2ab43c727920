"""Coordinator commands: `fedsafe consent ...` (and the server's deployment commands)."""

from __future__ import annotations

import argparse

from server.consent_cli import add_consent_parser

__all__ = ["add_server_parsers"]


def add_server_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Mount every coordinator-side command on the top-level `fedsafe` parser."""
    add_consent_parser(sub)
