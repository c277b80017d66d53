"""What the services decide and refuse: a :class:`RebalanceEvent` and a :class:`DeadLetter`.

>>> RebalanceEvent.make_event_id("p1", 1000)
'p1@1000'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from streamfolio.messages.checks import (
    check_int,
    check_number,
    check_text,
    check_timestamp,
    fail,
    missing_field,
    set_field,
    weight_map,
)

__all__ = ["DeadLetter", "RebalanceEvent"]


@dataclass(frozen=True, slots=True)
class RebalanceEvent:
    """One rebalancer decision, for audit. ``event_id`` defaults to ``portfolio_id@timestamp``.

    >>> e = RebalanceEvent("p1", 1000, "sharpe 0.2 < 0.5", "rebalance", {"ATW": 1.0},
    ...                    {"ATW": 1.0}, 0.2, 0.6, 0.1, 0.15, 0.0, "optimal")
    >>> e.event_id
    'p1@1000'
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        name: name
        for name in (
            "portfolio_id",
            "timestamp",
            "reason",
            "decision",
            "old_weights",
            "new_weights",
            "sharpe_before",
            "sharpe_after",
            "expected_return_after",
            "risk_after",
            "turnover",
            "optimizer_status",
            "event_id",
        )
    }

    portfolio_id: str
    timestamp: int
    reason: str
    decision: str
    old_weights: Mapping[str, float]
    new_weights: Mapping[str, float]
    sharpe_before: float
    sharpe_after: float
    expected_return_after: float
    risk_after: float
    turnover: float
    optimizer_status: str
    event_id: str = ""

    def __post_init__(self) -> None:
        w = "RebalanceEvent"
        check_text(f"{w}.portfolio_id", self.portfolio_id, empty=False)
        check_timestamp(f"{w}.timestamp", self.timestamp)
        check_text(f"{w}.reason", self.reason)
        check_text(f"{w}.decision", self.decision, empty=False)
        set_field(self, "old_weights", weight_map(f"{w}.old_weights", self.old_weights))
        set_field(self, "new_weights", weight_map(f"{w}.new_weights", self.new_weights))
        for name in ("sharpe_before", "sharpe_after", "expected_return_after"):
            check_number(f"{w}.{name}", getattr(self, name))
        check_number(f"{w}.risk_after", self.risk_after, minimum=0.0)
        check_number(f"{w}.turnover", self.turnover, minimum=0.0)
        check_text(f"{w}.optimizer_status", self.optimizer_status)
        check_text(f"{w}.event_id", self.event_id)
        if not self.event_id:
            set_field(self, "event_id", self.make_event_id(self.portfolio_id, self.timestamp))

    @staticmethod
    def make_event_id(portfolio_id: str, timestamp: int) -> str:
        """The deterministic id of the decision for ``portfolio_id`` at ``timestamp``."""
        return f"{portfolio_id}@{timestamp}"

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``RebalanceEvent``)."""
        record = {name: getattr(self, name) for name in self.FIELDS}
        record["old_weights"] = dict(self.old_weights)
        record["new_weights"] = dict(self.new_weights)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(**{name: record[name] for name in cls.FIELDS})
        except KeyError as exc:
            raise missing_field(cls, exc) from None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be used: the original bytes plus why and where from.

    >>> d = DeadLetter("late", "bar 7 was final", "intraday-stock-prices", b"\\x06ATW",
    ...                timestamp=0, component="job", partition=3, offset=42)
    >>> DeadLetter.from_record(d.to_record()) == d
    True
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        name: name
        for name in (
            "reason",
            "detail",
            "source_topic",
            "payload",
            "timestamp",
            "component",
            "partition",
            "offset",
            "key",
        )
    }

    reason: str
    detail: str
    source_topic: str
    payload: bytes
    timestamp: int
    component: str
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None

    def __post_init__(self) -> None:
        w = "DeadLetter"
        check_text(f"{w}.reason", self.reason, empty=False)
        check_text(f"{w}.detail", self.detail)
        check_text(f"{w}.source_topic", self.source_topic)
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            fail(f"{w}.payload", f"must be bytes, got {type(self.payload).__name__}")
        set_field(self, "payload", bytes(self.payload))
        check_timestamp(f"{w}.timestamp", self.timestamp)
        check_text(f"{w}.component", self.component, empty=False)
        if self.partition is not None:
            check_int(f"{w}.partition", self.partition, minimum=0)
        if self.offset is not None:
            check_int(f"{w}.offset", self.offset, minimum=0)
        if self.key is not None:
            if not isinstance(self.key, bytes | bytearray | memoryview):
                fail(f"{w}.key", f"must be bytes or null, got {type(self.key).__name__}")
            set_field(self, "key", bytes(self.key))

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``DeadLetter``)."""
        return {
            "reason": self.reason,
            "detail": self.detail,
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "payload": self.payload,
            "timestamp": self.timestamp,
            "component": self.component,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(
                record["reason"],
                record["detail"],
                record["source_topic"],
                record["payload"],
                record["timestamp"],
                record["component"],
                record.get("partition"),
                record.get("offset"),
                record.get("key"),
            )
        except KeyError as exc:
            raise missing_field(cls, exc) from None
