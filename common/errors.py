"""Domain errors: one project base class, each subclass naming what was wrong and where."""

from __future__ import annotations

__all__ = [
    "FedsafeError",
    "ConfigError",
    "DataError",
    "PrivacyError",
    "AccountantError",
    "BudgetExceededError",
    "IntegrityError",
    "LedgerError",
    "ConsentError",
    "NoSiteTrainedError",
]


class FedsafeError(Exception):
    """Base of every error fedsafe raises on purpose; catch this at entry points."""


class ConfigError(FedsafeError, ValueError):
    """A configuration value is missing, of the wrong type or out of range.

    The message always names the key, the offending value, what is allowed and,
    when known, the file the value came from.
    """

    def __init__(self, key: str, value: object, allowed: str, *, source: str | None = None) -> None:
        self.key, self.value, self.allowed, self.source = key, value, allowed, source
        where = f" (from {source})" if source else ""
        super().__init__(f"config key '{key}'{where}: got {value!r}; allowed: {allowed}")


class DataError(FedsafeError, ValueError):
    """A data file or data set is missing, malformed or does not match its schema."""


class PrivacyError(FedsafeError, ValueError):
    """A privacy parameter is invalid (for example delta outside (0, 1))."""


class AccountantError(PrivacyError):
    """A privacy accountant could not compute a value for the given history."""


class BudgetExceededError(PrivacyError):
    """A site's privacy budget would be exceeded; the site refuses to train."""


class IntegrityError(FedsafeError):
    """A signature, seal or hash did not verify. Deliberately says no more than that."""


class LedgerError(FedsafeError):
    """The ledger could not be read, written or verified."""


class ConsentError(FedsafeError):
    """A consent record is missing, invalid, expired or withdrawn."""


class NoSiteTrainedError(FedsafeError):
    """A run ended with no site having trained in any round: nothing was learned, so the run
    fails rather than report a summary of an untrained model."""
