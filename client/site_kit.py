"""`fedsafe site init`: a site kit folder with keys, a commented site.yaml and an admin README."""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fedsafe.client.site_config import parse_address
from fedsafe.common.crypto.pki import KeyFileError, init_site_keys, load_sealing_public_key

__all__ = ["SiteKit", "init_site_kit", "render_site_yaml", "add_init_parser", "run_init"]

SITE_YAML_TEMPLATE = """\
# fedsafe site configuration for site '{site}'.
# `fedsafe site start --config site.yaml` checks every key (and your data against the schema)
# BEFORE it connects; an error names the key, the value and what is allowed.
# Relative paths are read from the folder holding this file.

# This site's name. The coordinator sees it in reports; it is also in your key files.
site: {site}

# The coordinator's SuperLink Fleet API, host:port (the coordinator tells you).
# Only outgoing connections are made; your site opens no port to the outside.
superlink: {superlink}

# The CA certificate the coordinator sent you. The connection is refused unless the
# SuperLink presents a certificate signed by this CA (TLS; the CA key never leaves them).
ca_cert: {ca_cert}

# This site's SuperNode authentication key (OpenSSH P-384). Keep it private: it never leaves
# this folder. Send ONLY auth.pub to the coordinator, who enrolls it
# (`fedsafe server enroll --site-pub auth.pub`). An unenrolled key is refused.
auth_key: auth.key

# This site's Ed25519 signing key for attestations (its privacy spend, its consent).
# Keep it private; give signing.pub to whoever verifies the ledger.
signing_key: signing.key

# Your data: one CSV or Parquet file, and the schema YAML every site agreed with the
# coordinator (column types, categorical levels, declared numeric ranges, target,
# missing-value policy). Features are scaled by the declared ranges, never by your rows.
# The file is read here only; no row leaves the site, statistics only as `release:` allows.
data: data.csv
schema: schema.yaml

# A stable name for this data set in your budget store. Privacy spend composes over every
# run that uses the same dataset_id: change it only for genuinely different data.
dataset_id: {site}-v1

# Your privacy budget store (SQLite, created on first use). It records every round this
# site trained for, across runs; back it up and never reset it to gain budget.
budget_store: budget.sqlite

# What this site allows, whatever the coordinator asks. A round that would break a rule
# is refused and recorded in the budget store.
policy:
  # Cap on the epsilon composed over all runs on dataset_id, at `delta`.
  max_epsilon: 8.0
  # Target delta; keep it below 1 / (number of rows in your data).
  delta: 1.0e-5
  # How epsilon is composed: rdp (Renyi DP, default) or prv.
  accountant: rdp
  # Refuse rounds that add less noise than this (noise multiplier of DP-SGD).
  min_noise_multiplier: 0.5
  # Purposes you agreed to; empty list = any purpose.
  allowed_purposes: []

# The coordinator's ServerApp sealing key (X25519 public key, from the coordinator with
# ca.pem). This site encrypts its model updates to this pinned key only, so the relay cannot
# read or swap them. Remove the line only if the coordinator runs without sealed updates.
server_sealing_pub: server_sealing.pub

# Optional: the loopback address of this SuperNode's Runtime API (Flower's ClientAppIo).
# Leave unset to pick a free port at start; set it when a firewall rule needs a fixed one.
# runtime_api: 127.0.0.1:9094
"""

README_TEMPLATE = """\
# fedsafe site kit: {site}

This folder is everything site **{site}** needs to take part in federated training.

## Files

| file | what it is | share it? |
|---|---|---|
| `site.yaml` | this site's configuration (commented) | no |
| `auth.key` | SuperNode authentication private key (P-384) | **never** |
| `auth.pub` | its public key: the coordinator enrolls it | send to the coordinator |
| `signing.key` | Ed25519 key that signs this site's attestations | **never** |
| `signing.pub` | its public key, to verify signatures | to coordinator and auditors |
| `ca.pem` | the coordinator's CA certificate | received from the coordinator |
| `server_sealing.pub` | the ServerApp's sealing key; updates are sealed to it | received |
| `data.csv` | your data (you add it) | **never** |
| `schema.yaml` | the schema all sites agreed (you add it) | public |
| `budget.sqlite` | your privacy budget store (created on first run) | no; back it up |

## Steps

1. Send `auth.pub` and `signing.pub` to the coordinator; get `ca.pem`, `server_sealing.pub`
   and the SuperLink address from them. Put the two files here and the address in
   `site.yaml` (`superlink:`).
2. Put your data file and the agreed schema here (or point `data:`/`schema:` at them).
3. Set your limits under `policy:` in `site.yaml`.
4. Start: `fedsafe site start --config site.yaml`. It checks the configuration and every
   row of your data against the schema first, and connects only when all is valid.

## What leaves this site

- **Model-shaped updates**: arrays with the model's own names and shapes, after DP-SGD
  training (clipped, noised per-example gradients).
- **DP parameters**: this site's cumulative epsilon, delta, steps, noise multiplier and
  sample rate (1 / ceil(n / batch size): it reveals your row count to within a batch).
- **The aggregation weight**: your training-row count, rounded to `release.count_rounding`
  unless `release.evaluation: exact`.
- **Evaluation metrics, only as `release:` in site.yaml allows**: `off` (the default: none),
  `rounded` (counts rounded, suppressed under `min_count`), `dp` (noised counts, charged to
  your budget) or `exact`. Training loss leaves only under `exact`. Held-out metrics are
  statistics of your records: under `exact` or `rounded` they are a disclosure you chose.
- **Signed attestations**: records signed with `signing.key` (privacy spend, consent).

## What does not leave this site

- No data row, no column of your file, no identifier.
- No statistic beyond the release policy: preprocessing (imputation values, scaling,
  category encodings) is fitted here, on your training rows, and stays here; class weights
  under DP come from the `policy.class_prevalence` you declare, never from your counts.
- No private key.

## Checking

- Your own budget, per dataset and run (composed epsilon, rounds, refusals):
  `fedsafe site budget --store budget.sqlite --keys .` (checked against your signed head)
- The coordinator's ledger (hash chain, signed heads, your signed attestations), from the
  run folder or ledger.sqlite they give you:
  `fedsafe audit verify RUN_FOLDER --keys KEYS_FOLDER` (`server_signing.pub` and
  `sites/<site>.pub`; see `fedsafe audit verify --help`).

The site refuses a round on its own when it would exceed `policy.max_epsilon`, add less
noise than `policy.min_noise_multiplier`, or serve a purpose not in `policy.allowed_purposes`.
"""


@dataclass(frozen=True)
class SiteKit:
    """The files `fedsafe site init` wrote."""

    directory: Path
    site: str
    site_yaml: Path
    readme: Path
    auth_key: Path
    auth_pub: Path
    signing_key: Path
    signing_pub: Path
    ca_cert: Path | None
    server_sealing_pub: Path | None = None


def render_site_yaml(site: str, *, superlink: str, ca_cert: str) -> str:
    """The commented site.yaml template filled in; YAML-valid for any accepted site name."""
    return SITE_YAML_TEMPLATE.format(site=site, superlink=superlink, ca_cert=ca_cert)


def init_site_kit(
    site: str,
    directory: Path | None = None,
    *,
    superlink: str = "127.0.0.1:9092",
    ca_cert: Path | None = None,
    server_sealing_pub: Path | None = None,
) -> SiteKit:
    """Create a site kit: keys, commented site.yaml, README; never overwrites anything.

    `ca_cert` and `server_sealing_pub`, when given, are copied in as `ca.pem` and
    `server_sealing.pub` so the kit is self-contained.
    """
    directory = Path(directory if directory is not None else site).expanduser()
    parse_address(superlink, key="superlink", source="--superlink")
    site_yaml, readme = directory / "site.yaml", directory / "README.md"
    for path in (site_yaml, readme):
        if path.exists():
            raise KeyFileError(path, "already exists; refusing to overwrite a site kit")
    if ca_cert is not None and not Path(ca_cert).is_file():
        raise KeyFileError(Path(ca_cert), "CA certificate not found")
    if server_sealing_pub is not None:
        load_sealing_public_key(Path(server_sealing_pub))  # named error if missing or bad
    keys = init_site_keys(directory, site)
    copied = None
    if ca_cert is not None:
        copied = directory / "ca.pem"
        shutil.copyfile(ca_cert, copied)
    sealing = None
    if server_sealing_pub is not None:
        sealing = directory / "server_sealing.pub"
        shutil.copyfile(server_sealing_pub, sealing)
    site_yaml.write_text(
        render_site_yaml(site, superlink=superlink, ca_cert="ca.pem"), encoding="utf-8"
    )
    readme.write_text(README_TEMPLATE.format(site=site), encoding="utf-8")
    return SiteKit(
        directory=directory,
        site=site,
        site_yaml=site_yaml,
        readme=readme,
        auth_key=keys.auth_key,
        auth_pub=keys.auth_pub,
        signing_key=keys.signing_key,
        signing_pub=keys.signing_pub,
        ca_cert=copied,
        server_sealing_pub=sealing,
    )


def run_init(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Write the kit and say what to send where."""
    out = out or sys.stdout
    kit = init_site_kit(
        args.name,
        args.dir,
        superlink=args.superlink,
        ca_cert=args.ca,
        server_sealing_pub=args.server_sealing_pub,
    )
    print(f"site kit for '{kit.site}' in {kit.directory}", file=out)
    print(f"  send to the coordinator: {kit.auth_pub} and {kit.signing_pub}", file=out)
    if kit.ca_cert is None:
        print(f"  put the coordinator's CA certificate at {kit.directory / 'ca.pem'}", file=out)
    if kit.server_sealing_pub is None:
        where = kit.directory / "server_sealing.pub"
        print(f"  put the coordinator's sealing key (sealing.pub) at {where}", file=out)
    print(f"  add your data and schema, edit {kit.site_yaml}, then:", file=out)
    print(f"  fedsafe site start --config {kit.site_yaml}", file=out)
    return 0


def add_init_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `init NAME [--dir DIR] [--superlink HOST:PORT] [--ca CA.pem] [--server-sealing-pub]`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "init",
        help="create a site kit: keys, a commented site.yaml and a README",
        description="Create a site kit folder. Private keys are created with mode 0600 "
        "and are never overwritten.",
    )
    parser.add_argument("name", help="the site's name (letters, digits, . _ -)")
    parser.add_argument("--dir", type=Path, default=None, help="kit folder (default: ./NAME)")
    parser.add_argument(
        "--superlink", default="127.0.0.1:9092", help="coordinator's Fleet API host:port"
    )
    parser.add_argument("--ca", type=Path, default=None, help="the coordinator's CA certificate")
    parser.add_argument(
        "--server-sealing-pub",
        type=Path,
        default=None,
        help="the coordinator's ServerApp sealing key (sealing.pub)",
    )
    parser.set_defaults(func=run_init)
    return parser
