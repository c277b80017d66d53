"""The portfolio definitions topic (role ``portfolios``, compacted, keyed by portfolio id): the
portfolios in force, read to the topic's end (:func:`read_definitions`), and a definition or a
removal written to it (:func:`publish_definition`, :func:`publish_removal`).

A removal is a tombstone: the portfolio's key with no value, its Kafka timestamp the event time
from which the portfolio no longer exists. Compaction keeps the newest record of every key, so
a reader from the start of the topic finds every portfolio's latest definition.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from streamfolio.config import Component, Settings
from streamfolio.errors import DataError, SchemaError
from streamfolio.kafka.clients import ConsumedRecord, RecordConsumer, RecordProducer
from streamfolio.kafka.topics import contract
from streamfolio.messages import PortfolioDefinition
from streamfolio.serde import codec_for

__all__ = [
    "DefinitionRead",
    "publish_definition",
    "publish_removal",
    "read_definitions",
    "read_one",
    "read_topic",
    "removed_ids",
]


@dataclass(frozen=True, slots=True)
class DefinitionRead:
    """One record of the definitions topic: a definition, or the removal (``definition`` None)
    of ``portfolio_id`` from ``timestamp_ms`` on; ``error`` says why a record is unreadable."""

    portfolio_id: str
    timestamp_ms: int
    definition: PortfolioDefinition | None
    error: str | None = None


def read_one(record: ConsumedRecord) -> DefinitionRead:
    """Decode one consumed record (read with ``decode=False``: a tombstone has no value)."""
    key = (record.key or b"").decode("utf-8", "replace")
    if not record.value:
        return DefinitionRead(key, record.timestamp_ms, None)
    try:
        decoded = codec_for("PortfolioDefinition").decode(record.value)
        definition = PortfolioDefinition.from_record(decoded)
    except SchemaError as exc:
        return DefinitionRead(key, record.timestamp_ms, None, str(exc))
    return DefinitionRead(definition.portfolio_id, definition.timestamp, definition)


def read_definitions(
    settings: Settings, *, component: Component = "admin", timeout_s: float = 30.0
) -> dict[str, PortfolioDefinition]:
    """The latest definition of every portfolio on the topic (removed ones left out), read
    from its start to the end offsets found now. Unreadable records are skipped (the job
    dead-letters them)."""
    return read_topic(settings, component=component, timeout_s=timeout_s)[0]


def removed_ids(settings: Settings, *, component: Component = "admin") -> set[str]:
    """The portfolios whose newest record on the topic is a removal."""
    return read_topic(settings, component=component)[1]


def read_topic(
    settings: Settings, *, component: Component = "admin", timeout_s: float = 30.0
) -> tuple[dict[str, PortfolioDefinition], set[str]]:
    """The newest definition of every portfolio on the topic, and the ids removed last."""
    topic = contract(settings, "portfolios")
    found: dict[str, PortfolioDefinition] = {}
    removed: set[str] = set()
    with RecordConsumer(
        settings.kafka,
        [topic],
        component=component,
        group_id=f"streamfolio-portfolios-{uuid.uuid4().hex[:8]}",
        from_beginning=True,
        assign_all=True,
        decode=False,
    ) as consumer:
        left = {tp: end for tp, end in consumer.end_offsets().items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise DataError(
                    f"could not read {topic.name} to its end within {timeout_s:g} s",
                    settings.kafka.bootstrap_servers,
                )
            record = consumer.poll(0.5)
            if record is None:
                continue
            read = read_one(record)
            if read.error is None:
                if read.definition is None:
                    found.pop(read.portfolio_id, None)
                    removed.add(read.portfolio_id)
                else:
                    found[read.portfolio_id] = read.definition
                    removed.discard(read.portfolio_id)
            where = (record.topic, record.partition)
            if where in left and record.offset + 1 >= left[where]:
                del left[where]
    return found, removed


def publish_definition(
    producer: RecordProducer, settings: Settings, d: PortfolioDefinition
) -> None:
    """Queue ``d`` on the definitions topic, its Kafka timestamp its effective time."""
    producer.send(contract(settings, "portfolios"), d.to_record(), timestamp_ms=d.timestamp)


def publish_removal(
    producer: RecordProducer, settings: Settings, portfolio_id: str, timestamp_ms: int
) -> None:
    """Queue the tombstone that removes ``portfolio_id`` from ``timestamp_ms`` on."""
    producer.send_raw(
        contract(settings, "portfolios").name,
        portfolio_id.encode(),
        None,
        timestamp_ms=timestamp_ms,
    )
