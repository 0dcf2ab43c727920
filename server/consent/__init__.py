"""The coordinator's consent room: the registry of site-signed grants and withdrawals
(`registry`), where it keeps its rows (`store`), consent declared in a run's config
(`config_grants`) and the `fedsafe consent` commands (`cli`)."""

from fedsafe.server.consent.registry import ConsentDecision, ConsentEntry, ConsentRegistry
from fedsafe.server.consent.store import DEFAULT_FILENAME, consent_tables, registry_url

__all__ = [
    "DEFAULT_FILENAME",
    "ConsentDecision",
    "ConsentEntry",
    "ConsentRegistry",
    "consent_tables",
    "registry_url",
]
