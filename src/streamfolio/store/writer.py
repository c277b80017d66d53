"""Idempotent writes: each message becomes an upsert on its natural key, a batch one transaction.

Why natural keys rather than ``(topic, partition, offset)``: the same fact can reach Kafka more
than once at different offsets (a producer retrying without idempotence, the streaming job
re-emitting after a restore from a checkpoint, a topic copied to a new cluster). Keyed by what the
row is about, all of those collapse into one row; keyed by offset they would all be kept. The
offset is still stored with the row, so every row says where it came from.

On a key conflict the incoming message replaces the stored row (``ON CONFLICT … DO UPDATE``): the
last message read wins. Within one partition that is the newest message, so a replay ends in the
same state as the first pass.

>>> from streamfolio.messages import Weights
>>> from streamfolio.store.schema import open_store
>>> writer = StoreWriter(open_store("sqlite://"))
>>> w = Weights("p1", 1_750_000_000_000, {"ATW": 0.6, "IAM": 0.4}, reason="initial")
>>> writer.write([w, w])  # the same message twice in a batch is written once
{'weights': 1}
>>> writer.write([w])  # and again later replaces, never duplicates
{'weights': 1}
>>> writer.row_counts()["weights"]
1
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.expression import Executable

from streamfolio.messages import PortfolioMetrics, PortfolioStats, RebalanceEvent, Weights
from streamfolio.store import schema
from streamfolio.store.schema import StoreError

__all__ = [
    "Batch",
    "Provenance",
    "StoreWriter",
    "StoredMessage",
    "row_of",
    "table_of",
]

StoredMessage: TypeAlias = PortfolioMetrics | PortfolioStats | Weights | RebalanceEvent
"""The messages the history database keeps."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a message was read: kept with its row, for audit."""

    topic: str = ""
    partition: int | None = None
    offset: int | None = None


def _instant(timestamp_ms: int) -> dt.datetime:
    # Exact for any epoch-ms value (datetime.fromtimestamp goes through a float).
    return _EPOCH + dt.timedelta(milliseconds=timestamp_ms)


def table_of(message: StoredMessage) -> sa.Table:
    """The table a message is stored in."""
    if isinstance(message, PortfolioMetrics):
        return schema.metrics
    if isinstance(message, PortfolioStats):
        return schema.statistics
    if isinstance(message, Weights):
        return schema.weights
    if isinstance(message, RebalanceEvent):
        return schema.rebalance_events
    raise TypeError(f"the history store does not keep {type(message).__name__}")


def row_of(
    message: StoredMessage, provenance: Provenance | None = None, *, stored_at_ms: int = 0
) -> dict[str, Any]:
    """The row (column -> value) that stores ``message``."""
    source = provenance or Provenance()
    row: dict[str, Any] = {
        "kafka_topic": source.topic,
        "kafka_partition": source.partition,
        "kafka_offset": source.offset,
        "stored_at_ms": stored_at_ms,
        "timestamp_ms": message.timestamp,
        "event_time": _instant(message.timestamp),
        "portfolio_id": message.portfolio_id,
    }
    if isinstance(message, PortfolioMetrics):
        row.update(
            expected_return=message.expected_return,
            risk=message.risk,
            sharpe_ratio=message.sharpe_ratio,
            sharpe_threshold=message.sharpe_threshold,
            observations=message.count,
            mean_return=message.mean_return,
            variance=message.variance,
            periods_per_year=message.periods_per_year,
            risk_free_rate=message.risk_free_rate,
            stats_timestamp_ms=message.stats_timestamp,
            weights=dict(message.weights),
        )
    elif isinstance(message, PortfolioStats):
        tickers = list(message.tickers)
        row.update(
            kind=message.kind,
            observations=message.count,
            estimator=message.estimator,
            half_life_bars=message.half_life_bars,
            bar_seconds=message.bar_seconds,
            tickers=tickers,
            mean=dict(zip(tickers, message.mean, strict=True)),
            covariance={
                t: dict(zip(tickers, r, strict=True))
                for t, r in zip(tickers, message.covariance, strict=True)
            },
        )
    elif isinstance(message, Weights):
        row.update(weights=dict(message.weights), reason=message.reason, source=message.source)
    elif isinstance(message, RebalanceEvent):
        row.update(
            event_id=message.event_id,
            decision=message.decision,
            reason=message.reason,
            old_weights=dict(message.old_weights),
            new_weights=dict(message.new_weights),
            sharpe_before=message.sharpe_before,
            sharpe_after=message.sharpe_after,
            expected_return_after=message.expected_return_after,
            risk_after=message.risk_after,
            turnover=message.turnover,
            optimizer_status=message.optimizer_status,
        )
    else:  # pragma: no cover - table_of has the same cases
        raise TypeError(f"the history store does not keep {type(message).__name__}")
    return row


def _key_columns(table: sa.Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.primary_key.columns)


class Batch:
    """Rows waiting for one transaction; for each key only the last message added is kept.

    Keeping one row per key is required, not just thrifty: PostgreSQL rejects an
    ``INSERT … ON CONFLICT DO UPDATE`` that touches the same row twice.
    """

    def __init__(self) -> None:
        self._rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        self.messages = 0
        """Messages added since the batch was made or cleared (duplicates included)."""

    def add(
        self,
        message: StoredMessage,
        provenance: Provenance | None = None,
        *,
        stored_at_ms: int | None = None,
    ) -> None:
        """Queue ``message``; it replaces a queued message with the same key."""
        table = table_of(message)
        when = int(time.time() * 1000) if stored_at_ms is None else stored_at_ms
        row = row_of(message, provenance, stored_at_ms=when)
        key = tuple(row[c] for c in _key_columns(table))
        rows = self._rows.setdefault(table.name, {})
        rows.pop(key, None)  # re-insert, so rows stay in the order of their last message
        rows[key] = row
        self.messages += 1

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """Table name -> rows to upsert, tables in :func:`~schema.table_names` order."""
        return {
            name: list(self._rows[name].values())
            for name in schema.table_names()
            if self._rows.get(name)
        }

    def clear(self) -> None:
        self._rows.clear()
        self.messages = 0

    def __len__(self) -> int:
        return self.messages

    def __bool__(self) -> bool:
        return self.messages > 0


def _upsert(dialect: str, table: sa.Table) -> Executable:
    keys = _key_columns(table)
    if dialect == "sqlite":
        lite = sqlite.insert(table)
        update = {c.name: lite.excluded[c.name] for c in table.columns if c.name not in keys}
        return lite.on_conflict_do_update(index_elements=list(keys), set_=update)
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        update = {c.name: pg.excluded[c.name] for c in table.columns if c.name not in keys}
        return pg.on_conflict_do_update(index_elements=list(keys), set_=update)
    raise StoreError(f"no upsert for database dialect {dialect!r}; use SQLite or PostgreSQL")


class StoreWriter:
    """Writes batches of messages to the history database, one transaction per batch."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        self._statements = {t: _upsert(dialect, schema.metadata.tables[t]) for t in self._names()}

    @staticmethod
    def _names() -> Sequence[str]:
        return schema.table_names()

    def write(self, messages: Batch | Iterable[StoredMessage]) -> dict[str, int]:
        """Upsert every message in one transaction; returns rows written per table.

        Either all of it is stored or, if the database fails, none of it (the exception
        propagates and the caller must not acknowledge the messages).
        """
        batch = messages if isinstance(messages, Batch) else _batch_of(messages)
        rows = batch.rows()
        if not rows:
            return {}
        with self.engine.begin() as connection:
            self._execute(connection, rows)
        return {name: len(table_rows) for name, table_rows in rows.items()}

    def _execute(self, connection: Connection, rows: Mapping[str, list[dict[str, Any]]]) -> None:
        for name, table_rows in rows.items():
            connection.execute(self._statements[name], table_rows)

    def row_counts(self) -> dict[str, int]:
        """Rows stored per history table."""
        with self.engine.connect() as connection:
            return {
                name: int(
                    connection.execute(
                        sa.select(sa.func.count()).select_from(schema.metadata.tables[name])
                    ).scalar_one()
                )
                for name in schema.table_names()
            }


def _batch_of(messages: Iterable[StoredMessage]) -> Batch:
    batch = Batch()
    for message in messages:
        batch.add(message)
    return batch
