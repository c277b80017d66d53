"""History: keep what the pipeline computes, and show it.

* :mod:`~streamfolio.store.schema`: the tables, and :func:`open_store` (SQLite file by default,
  PostgreSQL by URL);
* :mod:`~streamfolio.store.writer`: idempotent upserts on each message's natural key;
* :mod:`~streamfolio.store.service`: ``streamfolio store``, the Kafka → database loop (offsets
  committed after each database transaction);
* :mod:`~streamfolio.store.queries`: the questions users ask of the history, one call each;
* :mod:`~streamfolio.store.report`: ``streamfolio report``, a self-contained HTML page.

This package only imports what its first two modules need, so the store service does not load
pandas or matplotlib.
"""

from __future__ import annotations

from streamfolio.store.schema import DEFAULT_DATABASE, StoreError, open_store
from streamfolio.store.writer import Batch, Provenance, StoredMessage, StoreWriter

__all__ = [
    "DEFAULT_DATABASE",
    "Batch",
    "Provenance",
    "StoreError",
    "StoreWriter",
    "StoredMessage",
    "open_store",
]
