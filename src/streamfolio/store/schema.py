"""The history database: its tables, and how to open it (SQLite by default, PostgreSQL by URL).

One row per message, keyed by what the message is *about*, never by where it was read:

============================  ========================================  ==========================
table                         topic role                                natural key
============================  ========================================  ==========================
``metrics``                   ``metrics`` (``PortfolioMetrics``)        portfolio_id, timestamp_ms
``statistics``                ``updated_stats`` (``PortfolioStats``)    portfolio_id, timestamp_ms,
                                                                        kind
``weights``                   ``weights`` (``Weights``)                 portfolio_id, timestamp_ms
``rebalance_events``          ``rebalance_events`` (``RebalanceEvent``) event_id
``portfolio_definitions``     ``portfolios`` (``PortfolioDefinition``)  portfolio_id, timestamp_ms
============================  ========================================  ==========================

A row of ``portfolio_definitions`` is a definition the services took (its ``definition`` the
record as JSON) or a removal (``definition`` null), from ``timestamp_ms`` on: the audit trail of
what each portfolio was when. Compaction keeps only a portfolio's newest definition on the topic;
the store keeps every one it read.

Writing a message whose key is already stored replaces the row (:mod:`streamfolio.store.writer`),
so replaying a topic, or a producer re-sending after a restart, never duplicates history: the
last message read for a key wins. Each row also records where it was read (``kafka_topic``,
``kafka_partition``, ``kafka_offset``) and when it was stored (``stored_at_ms``, wall clock), for
audit.

Times are stored twice: ``timestamp_ms`` (epoch milliseconds UTC, the key, exact) and
``event_time`` (a SQL timestamp of the same instant, for people and dashboards writing SQL).
Maps (weights, means, covariances) are JSON (``JSONB`` on PostgreSQL).

The column sizes are limits: a message with a longer text (a portfolio id over 64 characters),
a ticker over :data:`TICKER_LENGTH` characters, or a NUL character in any text is refused before
the database sees it (:func:`streamfolio.store.writer.refusal_of`), on SQLite too, which would
keep it.

>>> engine = open_store("sqlite://")  # in memory
>>> sorted(table_names())
['metrics', 'portfolio_definitions', 'rebalance_events', 'statistics', 'weights']
>>> stored_schema_version(engine) == SCHEMA_VERSION
True
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from streamfolio.errors import StreamfolioError
from streamfolio.store import DEFAULT_DATABASE

__all__ = [
    "DEFAULT_DATABASE",
    "SCHEMA_VERSION",
    "SUPPORTED_DIALECTS",
    "TICKER_LENGTH",
    "StoreError",
    "metadata",
    "metrics",
    "open_store",
    "portfolio_definitions",
    "rebalance_events",
    "safe_url",
    "statistics",
    "stored_schema_version",
    "table_names",
    "weights",
]

SCHEMA_VERSION: Final = 1
"""Layout version written to ``store_meta``; a database from a newer streamfolio is refused."""

SUPPORTED_DIALECTS: Final = ("sqlite", "postgresql")
"""The upserts use each dialect's ``ON CONFLICT``; these are the two that have one here."""


class StoreError(StreamfolioError):
    """The history database cannot be opened, read or written; the message says why and how."""


metadata = sa.MetaData()

# JSON on SQLite (text, queryable with json_extract), JSONB on PostgreSQL (indexable).
_JSON: Final = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_PORTFOLIO_ID: Final = 64  # config.py accepts up to 64 characters
TICKER_LENGTH: Final = 32
"""Longest ticker the store keeps in its JSON maps and lists (config.py accepts up to 12)."""


def _time_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("timestamp_ms", sa.BigInteger, primary_key=True, comment="epoch ms UTC"),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    ]


def _provenance_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("kafka_topic", sa.String(249), nullable=False, default=""),
        sa.Column("kafka_partition", sa.Integer, nullable=True),
        sa.Column("kafka_offset", sa.BigInteger, nullable=True),
        sa.Column("stored_at_ms", sa.BigInteger, nullable=False, comment="wall clock, epoch ms"),
    ]


metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("portfolio_id", sa.String(_PORTFOLIO_ID), primary_key=True),
    *_time_columns(),
    sa.Column("expected_return", sa.Double, nullable=False, comment="annualised"),
    sa.Column("risk", sa.Double, nullable=False, comment="annualised volatility"),
    sa.Column("sharpe_ratio", sa.Double, nullable=False),
    sa.Column("sharpe_threshold", sa.Double, nullable=True),
    # `count` on the wire; renamed because COUNT reads as the SQL aggregate in hand-written SQL.
    sa.Column("observations", sa.BigInteger, nullable=False),
    sa.Column("mean_return", sa.Double, nullable=False, comment="per bar"),
    sa.Column("variance", sa.Double, nullable=False, comment="per bar"),
    sa.Column("periods_per_year", sa.Double, nullable=False),
    sa.Column("risk_free_rate", sa.Double, nullable=False),
    sa.Column("stats_timestamp_ms", sa.BigInteger, nullable=False),
    sa.Column("weights", _JSON, nullable=False, comment="ticker -> weight used"),
    *_provenance_columns(),
)

statistics = sa.Table(
    "statistics",
    metadata,
    sa.Column("portfolio_id", sa.String(_PORTFOLIO_ID), primary_key=True),
    *_time_columns(),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("observations", sa.BigInteger, nullable=False),
    sa.Column("estimator", sa.String(16), nullable=False),
    sa.Column("half_life_bars", sa.Double, nullable=True),
    sa.Column("bar_seconds", sa.BigInteger, nullable=True),
    sa.Column("tickers", _JSON, nullable=False, comment="ticker order"),
    sa.Column("mean", _JSON, nullable=False, comment="ticker -> mean per-bar log return"),
    sa.Column("covariance", _JSON, nullable=False, comment="ticker -> ticker -> covariance"),
    *_provenance_columns(),
)

weights = sa.Table(
    "weights",
    metadata,
    sa.Column("portfolio_id", sa.String(_PORTFOLIO_ID), primary_key=True),
    *_time_columns(),
    sa.Column("weights", _JSON, nullable=False, comment="ticker -> weight"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False, comment="the component that published them"),
    *_provenance_columns(),
)

rebalance_events = sa.Table(
    "rebalance_events",
    metadata,
    sa.Column("event_id", sa.String(_PORTFOLIO_ID + 24), primary_key=True),
    sa.Column("portfolio_id", sa.String(_PORTFOLIO_ID), nullable=False),
    sa.Column("timestamp_ms", sa.BigInteger, nullable=False, comment="epoch ms UTC"),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decision", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("old_weights", _JSON, nullable=False),
    sa.Column("new_weights", _JSON, nullable=False),
    sa.Column("sharpe_before", sa.Double, nullable=False),
    sa.Column("sharpe_after", sa.Double, nullable=False),
    sa.Column("expected_return_after", sa.Double, nullable=False),
    sa.Column("risk_after", sa.Double, nullable=False),
    sa.Column("turnover", sa.Double, nullable=False),
    sa.Column("optimizer_status", sa.Text, nullable=False),
    *_provenance_columns(),
    sa.Index("ix_rebalance_events_portfolio_time", "portfolio_id", "timestamp_ms"),
)

portfolio_definitions = sa.Table(
    "portfolio_definitions",
    metadata,
    sa.Column("portfolio_id", sa.String(_PORTFOLIO_ID), primary_key=True),
    *_time_columns(),
    # Free text (notify references, estimator names): not held to the ticker length.
    sa.Column(
        "definition",
        _JSON,
        nullable=True,
        comment="the PortfolioDefinition record; null: removed",
        info={"free_text": True},
    ),
    *_provenance_columns(),
)

store_meta = sa.Table(
    "store_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

_HISTORY_TABLES: Final = (metrics, statistics, weights, rebalance_events, portfolio_definitions)


def table_names() -> list[str]:
    """The tables that hold history (not ``store_meta``), in the order they are written."""
    return [t.name for t in _HISTORY_TABLES]


def safe_url(url: str | URL) -> str:
    """``url`` with any password masked, for messages and reports.

    >>> safe_url("postgresql://me:secret@db/history")
    'postgresql://me:***@db/history'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def _normalise(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"{str(url)!r} is not a database URL; use sqlite:///path/to/history.db or "
            "postgresql://user:password@host/dbname"
        ) from None
    dialect = parsed.get_backend_name()
    if dialect not in SUPPORTED_DIALECTS:
        raise StoreError(
            f"database {safe_url(parsed)}: {dialect} is not supported; use SQLite "
            "(sqlite:///history.db) or PostgreSQL (postgresql://user@host/dbname)"
        )
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.0 defaults to psycopg2; streamfolio depends on psycopg 3 only.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI filename; leave it to SQLite
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: `streamfolio report` can read while `streamfolio store` writes. NORMAL: durable at
        # every checkpoint, and a crash loses at most the last transactions, which Kafka replays.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def open_store(url: str | URL = DEFAULT_DATABASE, *, create: bool = True) -> Engine:
    """An engine for the history database at ``url``, with its tables created.

    SQLite files (and their folders) are created as needed; ``create=False`` instead requires the
    database to exist already (for readers: a typo in a path should not yield an empty report).
    Raises :class:`StoreError` naming the database (password masked) and the fix.
    """
    parsed = _normalise(url)
    path = _sqlite_file(parsed)
    if path is not None:
        if not create and not path.is_file():
            raise StoreError(
                f"no history database at {path}: run `streamfolio store` first, or pass "
                "--database with the URL it writes to"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if parsed.get_backend_name() == "sqlite":
            # A writer holds the lock for one short transaction: wait for it rather than fail.
            engine = sa.create_engine(parsed, connect_args={"timeout": 30})
            event.listen(engine, "connect", _on_sqlite_connect)
        else:
            engine = sa.create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise StoreError(_driver_hint(parsed, exc)) from None
    try:
        if create:
            metadata.create_all(engine)
            _stamp_version(engine)
        _check_version(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot open database {safe_url(parsed)}: {_first_line(exc)}") from None
    except StoreError:
        engine.dispose()
        raise
    return engine


def _driver_hint(url: URL, exc: BaseException) -> str:
    if url.get_backend_name() == "postgresql" and importlib.util.find_spec("psycopg") is None:
        return "PostgreSQL needs the psycopg driver: pip install 'psycopg[binary]'"
    return f"cannot load the driver for {safe_url(url)}: {exc}"


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the statement and a link to its docs; the first line is the cause.
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _stamp_version(engine: Engine) -> None:
    with engine.begin() as connection:
        present = connection.execute(
            sa.select(store_meta.c.value).where(store_meta.c.key == "schema_version")
        ).scalar_one_or_none()
        if present is None:
            connection.execute(
                store_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
            )


def stored_schema_version(engine: Engine) -> int | None:
    """The layout version recorded in the database, or None if it has no streamfolio tables."""
    if not sa.inspect(engine).has_table(store_meta.name):
        return None
    with engine.connect() as connection:
        value = connection.execute(
            sa.select(store_meta.c.value).where(store_meta.c.key == "schema_version")
        ).scalar_one_or_none()
    return None if value is None else int(value)


def _check_version(engine: Engine) -> None:
    version = stored_schema_version(engine)
    if version is None:
        raise StoreError(
            f"database {safe_url(engine.url)} has no streamfolio history tables: run "
            "`streamfolio store --database URL` to create them"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database {safe_url(engine.url)} has layout version {version}, newer than this "
            f"streamfolio's {SCHEMA_VERSION}: upgrade streamfolio"
        )
