"""`consent grant|withdraw|list` handlers, called through argparse in a temporary folder."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fedsafe.common.crypto import generate_signing_key
from fedsafe.common.crypto.pki import KeyFileError
from fedsafe.common.errors import ConfigError, ConsentError, IntegrityError
from fedsafe.server.consent import ConsentRegistry
from fedsafe.server.consent.cli import add_consent_parser

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsafe")
    add_consent_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str], *, now: datetime = NOW) -> tuple[int, str]:
    args = _parser().parse_args(argv)
    out = io.StringIO()
    kwargs = {"now": now} if args.consent_command != "list" else {}
    return args.func(args, out=out, **kwargs), out.getvalue()


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "h1"
    directory.mkdir()
    private_pem, public_pem = generate_signing_key()
    (directory / "signing.key").write_bytes(private_pem)
    (directory / "signing.pub").write_bytes(public_pem)
    return directory


def _grant_argv(registry: Path, site_dir: Path, *extra: str) -> list[str]:
    return [
        "consent",
        "grant",
        "--registry",
        str(registry),
        "--site",
        "h1",
        "--site-key",
        str(site_dir / "signing.key"),
        "--dataset",
        "heart",
        "--purpose",
        "training",
        "--purpose",
        "evaluation",
        "--legal-basis",
        "GDPR Art. 6(1)(e) + 9(2)(j)",
        "--category",
        "health",
        "--jurisdiction",
        "EU",
        "--valid-until",
        "2026-01-01T00:00:00Z",
        "--record-id",
        "r-1",
        *extra,
    ]


def test_grant_list_withdraw_round_trip(tmp_path: Path, site_dir: Path) -> None:
    registry = tmp_path / "coordinator" / "consent.db"
    registry.parent.mkdir()

    granted = _run(_grant_argv(registry, site_dir))
    listed = _run(["consent", "list", "--registry", str(registry), "--json"])
    withdrawn = _run(
        [
            "consent",
            "withdraw",
            "--registry",
            str(registry),
            "--site",
            "h1",
            "--site-key",
            str(site_dir / "signing.key"),
            "--record",
            "r-1",
            "--at",
            "2025-06-01T00:00:00Z",
        ]
    )
    table = _run(["consent", "list", "--registry", str(registry), "--site", "h1"])

    assert granted == (0, "granted r-1 for site 'h1' on 'heart'\n")
    rows = json.loads(listed[1])
    assert listed[0] == 0
    assert [row["record"]["purposes"] for row in rows] == [["training", "evaluation"]]
    assert rows[0]["record"]["granted_at"] == "2025-01-01T00:00:00.000000Z"
    assert rows[0]["withdrawal"] is None
    assert withdrawn == (0, "withdrew r-1 for site 'h1' at 2025-06-01T00:00:00.000000Z\n")
    assert "withdrawn 2025-06-01T00:00:00.000000Z" in table[1]
    public_pem = (site_dir / "signing.pub").read_bytes()
    with ConsentRegistry.open(registry) as opened:
        decision = opened.decide(
            site="h1",
            dataset="heart",
            purpose="training",
            at_time=datetime(2025, 7, 1, tzinfo=UTC),
            jurisdictions=("EU",),
            site_public_pem=public_pem,
        )
    assert decision.reason == "consent r-1 withdrawn at 2025-06-01T00:00:00.000000Z"


def test_grant_with_explicit_public_key_path(tmp_path: Path, site_dir: Path) -> None:
    moved = tmp_path / "elsewhere.pub"
    (site_dir / "signing.pub").rename(moved)

    code, _ = _run(_grant_argv(tmp_path / "c.db", site_dir, "--site-pub", str(moved)))

    assert code == 0


def test_grant_names_a_missing_key_file(tmp_path: Path, site_dir: Path) -> None:
    (site_dir / "signing.pub").unlink()

    with pytest.raises(KeyFileError, match=r"signing\.pub: file not found"):
        _run(_grant_argv(tmp_path / "c.db", site_dir))


def test_grant_with_mismatched_public_key_is_refused(tmp_path: Path, site_dir: Path) -> None:
    other = tmp_path / "other.pub"
    other.write_bytes(generate_signing_key()[1])

    with pytest.raises(ConfigError, match="does not match"):
        _run(_grant_argv(tmp_path / "c.db", site_dir, "--site-pub", str(other)))


def test_grant_names_a_time_without_zone(tmp_path: Path, site_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--valid-from"):
        _run(_grant_argv(tmp_path / "c.db", site_dir, "--valid-from", "2025-01-01"))


def test_withdraw_with_another_sites_key_is_refused(tmp_path: Path, site_dir: Path) -> None:
    registry = tmp_path / "c.db"
    _run(_grant_argv(registry, site_dir))
    other_dir = tmp_path / "h2"
    other_dir.mkdir()
    private_pem, _ = generate_signing_key()
    (other_dir / "signing.key").write_bytes(private_pem)
    (other_dir / "signing.pub").write_bytes((site_dir / "signing.pub").read_bytes())

    with pytest.raises(IntegrityError, match="nothing stored"):
        _run(
            [
                "consent",
                "withdraw",
                "--registry",
                str(registry),
                "--site",
                "h1",
                "--site-key",
                str(other_dir / "signing.key"),
                "--record",
                "r-1",
            ]
        )


def test_list_of_a_missing_registry_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConsentError, match="no consent registry"):
        _run(["consent", "list", "--registry", str(tmp_path / "missing.db")])


def test_list_of_an_empty_registry_says_so(tmp_path: Path) -> None:
    ConsentRegistry.open(tmp_path / "c.db").close()

    code, out = _run(["consent", "list", "--registry", str(tmp_path / "c.db")])

    assert (code, out) == (0, "(no consent on record)\n")
