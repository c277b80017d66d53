"""Messages as rows: which table keeps each message, its row, and what the store refuses up front.

:func:`table_of` and :func:`row_of` map a message to its table and row (the Kafka provenance kept
with it, for audit); :func:`refusal_of` says why a row cannot be stored before the database sees
it (a text longer than its column, a ticker longer than
:data:`~streamfolio.store.schema.TICKER_LENGTH`, a NUL character anywhere); :class:`Refused` is
what the store reports for a message it did not keep. The writer
(:mod:`streamfolio.store.writer`) builds its batches from these.

>>> from streamfolio.messages import Weights
>>> w = Weights("p1", 1_750_000_000_000, {"ATW": 0.6, "IAM": 0.4}, reason="initial")
>>> table_of(w).name, row_of(w, Provenance("weights", 0, 7))["kafka_offset"]
('weights', 7)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import sqlalchemy as sa

from streamfolio.kafka.definitions import DefinitionRead
from streamfolio.messages import PortfolioMetrics, PortfolioStats, RebalanceEvent, Weights
from streamfolio.store import schema

__all__ = [
    "Provenance",
    "Refused",
    "StoredMessage",
    "key_columns",
    "refusal_of",
    "row_of",
    "table_of",
]

StoredMessage: TypeAlias = (
    PortfolioMetrics | PortfolioStats | Weights | RebalanceEvent | DefinitionRead
)
"""The messages the history database keeps (a :class:`DefinitionRead`: a definition or a
removal read from the portfolios topic)."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a message was read: kept with its row, for audit."""

    topic: str = ""
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A message the store did not keep: its table, where it was read, and why (one line)."""

    table: str
    provenance: Provenance
    reason: str


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
    if isinstance(message, DefinitionRead):
        return schema.portfolio_definitions
    raise TypeError(f"the history store does not keep {type(message).__name__}")


def row_of(
    message: StoredMessage, provenance: Provenance | None = None, *, stored_at_ms: int = 0
) -> dict[str, Any]:
    """The row (column -> value) that stores ``message``."""
    source = provenance or Provenance()
    timestamp = message.timestamp_ms if isinstance(message, DefinitionRead) else message.timestamp
    row: dict[str, Any] = {
        "kafka_topic": source.topic,
        "kafka_partition": source.partition,
        "kafka_offset": source.offset,
        "stored_at_ms": stored_at_ms,
        "timestamp_ms": timestamp,
        "event_time": _instant(timestamp),
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
    elif isinstance(message, DefinitionRead):
        definition = message.definition
        row.update(definition=None if definition is None else definition.to_record())
    else:  # pragma: no cover - table_of has the same cases
        raise TypeError(f"the history store does not keep {type(message).__name__}")
    return row


def key_columns(table: sa.Table) -> tuple[str, ...]:
    """The columns of ``table``'s natural key (its primary key)."""
    return tuple(c.name for c in table.primary_key.columns)


def _texts(value: Any) -> Iterator[str]:
    """Every string in a JSON value: keys (tickers), list items (tickers), string values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def refusal_of(table: sa.Table, row: Mapping[str, Any]) -> str | None:
    """Why the store refuses ``row`` of ``table`` without asking the database, or None.

    Refused: a text longer than its column, a ticker (a string inside a JSON column) longer than
    :data:`~streamfolio.store.schema.TICKER_LENGTH`, and a NUL character in any text. The reason
    names the column, never the value (it may be huge, or hostile).

    >>> refusal_of(schema.weights, {"portfolio_id": "p\\x00", "weights": {}})
    'portfolio_id contains a NUL character'
    >>> refusal_of(schema.weights, {"portfolio_id": "p", "weights": {"T" * 40: 1.0}})
    'weights has a ticker of 40 characters, longer than the 32 the store keeps'
    """
    for column in table.columns:
        value = row.get(column.name)
        if value is None:
            continue
        if isinstance(column.type, sa.JSON):
            for text in _texts(value):
                if "\x00" in text:
                    return f"{column.name} contains a NUL character"
                if len(text) > schema.TICKER_LENGTH and not column.info.get("free_text"):
                    return (
                        f"{column.name} has a ticker of {len(text)} characters, longer than the "
                        f"{schema.TICKER_LENGTH} the store keeps"
                    )
        elif isinstance(value, str):
            if "\x00" in value:
                return f"{column.name} contains a NUL character"
            length = getattr(column.type, "length", None)
            if length is not None and len(value) > length:
                return (
                    f"{column.name} is {len(value)} characters, longer than the {length} "
                    "the store keeps"
                )
    return None
