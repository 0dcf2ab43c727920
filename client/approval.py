"""The code a site approved (site.yaml `approved_code`): FAB SHA-256 hashes or fedsafe versions."""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedsafe.common.errors import ConfigError, FedsafeError
from fedsafe.common.storage import write_atomic

__all__ = [
    "APPROVED_KEY",
    "APPROVAL_CODE",
    "ApprovedCode",
    "NotApprovedError",
    "parse_approved",
    "fab_sha256",
    "check_hash",
    "approve_command",
    "add_approval",
]

APPROVED_KEY = "approved_code"
APPROVAL_CODE = 4101  # Error code of the reply to a task whose code the site has not approved
_HASH = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"fedsafe==([0-9A-Za-z.+!_-]{1,40})")
_ALLOWED = (
    "a list of FAB SHA-256 hashes (64 lowercase hex digits) or 'fedsafe==VERSION' entries, "
    "e.g. `fedsafe site approve --config site.yaml --hash SHA256`"
)


class NotApprovedError(FedsafeError):
    """A run's FAB is not in the site's approved code: the task is refused, nothing runs."""


@dataclass(frozen=True)
class ApprovedCode:
    """What a site serves: runs whose FAB hash is listed, or whose FAB declares a listed version.

    A hash pins the exact bytes the coordinator submitted. A version entry is weaker: the
    version is what the coordinator's FAB declares, so it only says "I serve runs of fedsafe
    VERSION"; the site runs its own installed ClientApp either way.
    """

    hashes: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()

    def allows(self, fab_hash: str, fab_id: str, fab_version: str) -> bool:
        if fab_hash in self.hashes:
            return True
        return fab_id.split("/")[0] == "fedsafe" and fab_version in self.versions

    def entries(self) -> list[str]:
        return [*self.hashes, *(f"fedsafe=={v}" for v in self.versions)]


def check_hash(value: object, *, key: str = "--hash", source: str = "command line") -> str:
    """A FAB SHA-256 as 64 lowercase hex digits (upper case is folded); ConfigError otherwise."""
    text = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(text, str) or not _HASH.fullmatch(text):
        raise ConfigError(key, value, "a SHA-256 hash: 64 hex digits", source=source)
    return text


def parse_approved(value: object, *, source: str) -> ApprovedCode:
    """The `approved_code` list of a site.yaml; every bad entry is named by its index."""
    if value is None:
        return ApprovedCode()
    if not isinstance(value, list):
        raise ConfigError(APPROVED_KEY, value, _ALLOWED, source=source)
    hashes: list[str] = []
    versions: list[str] = []
    for i, item in enumerate(value):
        key = f"{APPROVED_KEY}[{i}]"
        if not isinstance(item, str):
            raise ConfigError(key, item, _ALLOWED, source=source)
        if match := _VERSION.fullmatch(item.strip()):
            versions.append(match.group(1))
        else:
            hashes.append(check_hash(item, key=key, source=source))
    return ApprovedCode(tuple(dict.fromkeys(hashes)), tuple(dict.fromkeys(versions)))


def fab_sha256(content: bytes) -> str:
    """The hash Flower gives a FAB (`flwr run`, `flwr build`): SHA-256 of its bytes."""
    return hashlib.sha256(content).hexdigest()


def approve_command(site_yaml: Path, fab_hash: str) -> str:
    """The exact command a site admin runs to approve this code."""
    return f"fedsafe site approve --config {site_yaml} --hash {fab_hash}"


def _entries_in(text: str, source: str) -> list[object]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("<document>", source, f"valid YAML ({err})", source=source) from None
    if not isinstance(data, dict):
        raise ConfigError("<root>", data, "a site.yaml mapping", source=source)
    current = data.get(APPROVED_KEY)
    parse_approved(current, source=source)
    return list(current or [])


def add_approval(site_yaml: Path, entries: Sequence[str]) -> list[str]:
    """Add entries to site.yaml's `approved_code`, keeping every other line (and comment) as is.

    The list is rewritten where it stands (or appended); the result is parsed back and must
    hold exactly the old entries plus the new ones, or the file is left untouched.
    """
    path = Path(site_yaml)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            "site config", source, f"a readable site.yaml ({err})", source=source
        ) from None
    current = _entries_in(text, source)
    wanted = list(dict.fromkeys([*(str(e) for e in current), *entries]))
    parse_approved(wanted, source=source)
    lines = text.splitlines()
    block = [f"{APPROVED_KEY}:"] + [f"  - {yaml.safe_dump(e).splitlines()[0]}" for e in wanted]
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{APPROVED_KEY}:")), None)
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += [
            "",
            "# Code this site serves (`fedsafe site approve`); any other run is refused.",
            *block,
        ]
    else:  # replace the old block in place: the key line and its indented or '-' items
        end = start + 1
        while end < len(lines) and lines[end][:1] in (" ", "\t", "-"):
            end += 1
        lines[start:end] = block
    new_text = "\n".join(lines) + "\n"
    if _entries_in(new_text, source) != wanted:
        raise FedsafeError(f"{source}: could not add {APPROVED_KEY} safely; edit it by hand")
    write_atomic(path, new_text, mode=stat.S_IMODE(path.stat().st_mode))  # keep its mode
    return wanted
