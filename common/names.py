"""One rule for every name that becomes part of a path or a key: run ids, site names, dataset ids.

A name is checked where it enters (config, site file, roll call, CLI) before anything touches the
file system, so `../x`, `a/b`, `..` or an empty string can never pick a folder or a key file.
"""

from __future__ import annotations

import re

from fedsafe.common.errors import ConfigError

__all__ = ["NAME_PATTERN", "is_valid_name", "check_name"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ALLOWED = (
    "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit "
    "(no path separators, no '..')"
)


def is_valid_name(value: object) -> bool:
    """True for a str that matches NAME_PATTERN and holds no '..'."""
    return isinstance(value, str) and bool(NAME_PATTERN.fullmatch(value)) and ".." not in value


def check_name(key: str, value: object, *, source: str | None = None) -> str:
    """Return `value` if it is a valid name, else ConfigError naming the key, value and source."""
    if not is_valid_name(value):
        raise ConfigError(key, value, _ALLOWED, source=source)
    assert isinstance(value, str)
    return value
