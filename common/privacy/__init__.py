"""Differential-privacy accounting: accountants by name over a site's whole history."""

from fedsafe.common.privacy.accountants import (
    ACCOUNTANTS,
    Accountant,
    Charge,
    epsilon_for,
    get_accountant,
    noise_for_target,
)

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "Charge",
    "epsilon_for",
    "get_accountant",
    "noise_for_target",
]
