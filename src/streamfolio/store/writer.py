"""Idempotent writes: each message becomes an upsert on its natural key, a batch one transaction.

Why natural keys rather than ``(topic, partition, offset)``: the same fact can reach Kafka more
than once at different offsets (a producer retrying without idempotence, the streaming job
re-emitting after a restore from a checkpoint, a topic copied to a new cluster). Keyed by what the
row is about, all of those collapse into one row; keyed by offset they would all be kept. The
offset is still stored with the row, so every row says where it came from.

On a key conflict the incoming message replaces the stored row (``ON CONFLICT … DO UPDATE``): the
last message read wins. Within one partition that is the newest message, so a replay ends in the
same state as the first pass.

What the database cannot hold is refused record by record, never batch by batch:

* before the database sees it, :meth:`Batch.add` refuses
  (:func:`~streamfolio.store.rows.refusal_of`) a message with a text longer than its column (a
  portfolio id over 64 characters), a ticker longer than
  :data:`~streamfolio.store.schema.TICKER_LENGTH`, or a NUL character anywhere (PostgreSQL
  refuses NUL in text; SQLite would keep it and enforce no length);
* :meth:`StoreWriter.write_batch` writes the rest in one transaction and, if the database refuses
  it with a data error (a value out of range, a constraint), writes it again record by record,
  each in its own transaction: every record the database accepts is kept, the others are
  returned as :class:`Refused`, with the database's reason in one short line. Connection and
  other operational errors are not data errors: they propagate, and nothing is refused.

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
>>> result = writer.write_batch(Batch([w, Weights("p" * 65, 0, {"ATW": 1.0})]))
>>> result.written, [r.reason for r in result.refused]
({'weights': 1}, ['portfolio_id is 65 characters, longer than the 64 the store keeps'])
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.expression import Executable

from streamfolio.store import schema
from streamfolio.store.rows import (
    Provenance,
    Refused,
    StoredMessage,
    key_columns,
    refusal_of,
    row_of,
    table_of,
)
from streamfolio.store.schema import StoreError

__all__ = [
    "Batch",
    "Provenance",
    "Refused",
    "StoreWriter",
    "StoredMessage",
    "WriteResult",
    "is_data_error",
    "refusal_of",
    "row_of",
    "table_of",
]

log = logging.getLogger(__name__)

_REASON_CHARS: Final = 200
_URL: Final = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What :meth:`StoreWriter.write_batch` did: rows written per table, and what it refused."""

    written: dict[str, int]
    refused: list[Refused]
    transactions: int = 0
    """Database transactions committed (0 when nothing reached the database)."""


def is_data_error(error: BaseException) -> bool:
    """Whether the database refused a *value* (so another record may well be accepted), as
    opposed to failing as a whole (a lost connection, a full disk, a lock, a bug in a statement).

    Data errors: SQLAlchemy's ``DataError`` and ``IntegrityError`` (SQLite and PostgreSQL alike),
    a ``StatementError`` raised while preparing a value (not by the database), and the
    ``OverflowError`` SQLite's driver raises for an integer beyond 64 bits.
    """
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return False
        return isinstance(error, sa_exc.DataError | sa_exc.IntegrityError)
    return isinstance(error, sa_exc.StatementError | OverflowError)


def reason_of(error: BaseException) -> str:
    """The database's reason for refusing, in one short line: no SQL, parameters or URLs."""
    cause = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = _URL.sub("<url>", lines[0]) if lines else type(cause).__name__
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 1] + "…"
    return text


def _provenance_of(row: Mapping[str, Any]) -> Provenance:
    return Provenance(
        row.get("kafka_topic") or "", row.get("kafka_partition"), row.get("kafka_offset")
    )


class Batch:
    """Rows waiting for one transaction; for each key only the last message added is kept.

    Keeping one row per key is required, not just thrifty: PostgreSQL rejects an
    ``INSERT … ON CONFLICT DO UPDATE`` that touches the same row twice.

    A message :func:`refusal_of` refuses is not queued (nor does it replace a queued message with
    its key): it goes to :attr:`refused`.
    """

    def __init__(self, messages: Iterable[StoredMessage] = ()) -> None:
        self._rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        self.messages = 0
        """Messages added since the batch was made or cleared (duplicates and refused included)."""
        self.refused: list[Refused] = []
        """Messages refused before reaching the database, in the order they were added."""
        for message in messages:
            self.add(message)

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
        self.messages += 1
        problem = refusal_of(table, row)
        if problem is not None:
            self.refused.append(Refused(table.name, provenance or Provenance(), problem))
            return
        key = tuple(row[c] for c in key_columns(table))
        rows = self._rows.setdefault(table.name, {})
        rows.pop(key, None)  # re-insert, so rows stay in the order of their last message
        rows[key] = row

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """Table name -> rows to upsert, tables in :func:`~schema.table_names` order."""
        return {
            name: list(self._rows[name].values())
            for name in schema.table_names()
            if self._rows.get(name)
        }

    def clear(self) -> None:
        self._rows.clear()
        self.refused.clear()
        self.messages = 0

    def __len__(self) -> int:
        return self.messages

    def __bool__(self) -> bool:
        return self.messages > 0


def _upsert(dialect: str, table: sa.Table) -> Executable:
    keys = key_columns(table)
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
    """Writes batches of messages to the history database, one transaction per batch.

    :meth:`write` is all or nothing; :meth:`write_batch` (the store service's) keeps what the
    database accepts and returns the rest.
    """

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
        propagates and the caller must not acknowledge the messages). A message
        :func:`refusal_of` refuses raises :class:`StoreError` before the database is touched.
        """
        batch = messages if isinstance(messages, Batch) else Batch(messages)
        if batch.refused:
            first = batch.refused[0]
            raise StoreError(
                f"{len(batch.refused)} message(s) refused, nothing written; first, in "
                f"{first.table}: {first.reason}"
            )
        rows = batch.rows()
        if not rows:
            return {}
        with self.engine.begin() as connection:
            self._execute(connection, rows)
        return {name: len(table_rows) for name, table_rows in rows.items()}

    def write_batch(self, batch: Batch) -> WriteResult:
        """Upsert the batch, keeping every record the database accepts; returns what was written
        and what was refused (``batch.refused`` first, then what the database refused).

        The batch is one transaction. If the database refuses it with a data error
        (:func:`is_data_error`), each record is written again in a transaction of its own, and
        the ones it still refuses are returned with the database's reason. Any other error
        propagates; rows written before it stay written (writing them again changes nothing).
        """
        refused = list(batch.refused)
        rows = batch.rows()
        if not rows:
            return WriteResult({}, refused)
        try:
            with self.engine.begin() as connection:
                self._execute(connection, rows)
        except Exception as error:
            if not is_data_error(error):
                raise
            log.info("batch refused (%s); writing it record by record", reason_of(error))
        else:
            counts = {name: len(table_rows) for name, table_rows in rows.items()}
            return WriteResult(counts, refused, transactions=1)
        written: dict[str, int] = {}
        transactions = 0
        for name, table_rows in rows.items():
            for row in table_rows:
                try:
                    with self.engine.begin() as connection:
                        self._execute(connection, {name: [row]})
                except Exception as error:
                    if not is_data_error(error):
                        raise
                    refused.append(Refused(name, _provenance_of(row), reason_of(error)))
                else:
                    written[name] = written.get(name, 0) + 1
                    transactions += 1
        return WriteResult(written, refused, transactions)

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
