"""The one storage layer under fedsafe's three stores (budget, ledger, consent registry).

- `engine`: URLs and engines (SQLite files readable by their owner only, in-memory, PostgreSQL).
- `sqlite`: the settings every SQLite store needs and the one transaction helper.
- `schema`: each store's schema version, its migrations, and the refusal that names a version
  this fedsafe cannot read.
- `atomic`: whole-file writes that are never seen half done (keys, heads, checkpoints, reports).
"""

from __future__ import annotations

from fedsafe.common.storage.atomic import write_atomic
from fedsafe.common.storage.engine import open_engine, private_file, store_url
from fedsafe.common.storage.schema import StoreSchema, StoreVersionError
from fedsafe.common.storage.sqlite import WRITE_OPTION, configure_sqlite, table_names, transaction

__all__ = [
    "WRITE_OPTION",
    "StoreSchema",
    "StoreVersionError",
    "configure_sqlite",
    "open_engine",
    "private_file",
    "store_url",
    "table_names",
    "transaction",
    "write_atomic",
]
