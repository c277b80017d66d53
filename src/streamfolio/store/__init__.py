"""History: keep what the pipeline computes, and show it.

* :mod:`~streamfolio.store.schema`: the tables, and ``open_store`` (a SQLite file by default,
  PostgreSQL by URL);
* :mod:`~streamfolio.store.rows`: which table keeps each message, its row, and what the store
  refuses before the database sees it;
* :mod:`~streamfolio.store.writer`: idempotent upserts on each message's natural key;
* :mod:`~streamfolio.store.service`: ``streamfolio store``, the Kafka → database loop (offsets
  committed after each database transaction), with its consumer
  (:mod:`~streamfolio.store.consumer`) and dead-letter outbox
  (:mod:`~streamfolio.store.dead_letters`);
* :mod:`~streamfolio.store.queries`: the questions users ask of the history, one call each, over
  the typed rows and times of :mod:`~streamfolio.store.records`;
* :mod:`~streamfolio.store.report`: ``streamfolio report``, a self-contained HTML page, from
  :mod:`~streamfolio.store.report_data` (what it shows) and
  :mod:`~streamfolio.store.report_charts` (its charts);
* :mod:`~streamfolio.store.cli`: the two commands.

Nothing is imported here, so that registering the commands costs the CLI no start-up time
(SQLAlchemy, pandas and matplotlib load only when a command runs).
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_DATABASE"]

DEFAULT_DATABASE: Final = "sqlite:///.cache/streamfolio/history.db"
"""Where history goes unless ``--database`` says otherwise (relative to the working directory)."""
