"""History: keep what the pipeline computes, and show it.

* :mod:`~streamfolio.store.schema`: the tables, and ``open_store`` (a SQLite file by default,
  PostgreSQL by URL);
* :mod:`~streamfolio.store.writer`: idempotent upserts on each message's natural key;
* :mod:`~streamfolio.store.service`: ``streamfolio store``, the Kafka → database loop (offsets
  committed after each database transaction);
* :mod:`~streamfolio.store.queries`: the questions users ask of the history, one call each;
* :mod:`~streamfolio.store.report`: ``streamfolio report``, a self-contained HTML page;
* :mod:`~streamfolio.store.cli`: the two commands.

Nothing is imported here, so that registering the commands costs the CLI no start-up time
(SQLAlchemy, pandas and matplotlib load only when a command runs).
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_DATABASE"]

DEFAULT_DATABASE: Final = "sqlite:///.cache/streamfolio/history.db"
"""Where history goes unless ``--database`` says otherwise (relative to the working directory)."""
