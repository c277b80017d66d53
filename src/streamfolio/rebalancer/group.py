"""The rebalancer's group consumer: its configuration, and how its partitions are told.

Apart from :mod:`.service` so that the loop reads as the loop.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Final

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamfolio.config import Settings
from streamfolio.kafka.outage import observed

__all__ = ["SESSION_TIMEOUT_MS", "describe", "group_consumer_config", "ignored", "unread"]

log = logging.getLogger(__name__)

SESSION_TIMEOUT_MS: Final = 10_000
"""How soon the group notices an instance that died (kill -9) and gives its partitions away."""


def group_consumer_config(
    settings: Settings, *, group_id: str, instance: str, from_beginning: bool
) -> dict[str, Any]:
    """The configuration of the consumer reading metrics and statistics in ``group_id``."""
    return observed(
        {
            **settings.kafka.client_config("rebalancer"),
            "client.id": f"{settings.kafka.client_id}-rebalancer-{instance}",
            "group.id": group_id,
            # Co-partitioned topics: range gives partition i of both to the same instance.
            "partition.assignment.strategy": "range",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
        }
    )


def describe(partitions: list[TopicPartition]) -> str:
    """``partitions`` by topic, for a progress line."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by_topic.items())) or "nothing"


def ignored(skipped: Counter[str]) -> str:
    """The records the memory ignored, by reason, for a progress line ("" when none)."""
    if not skipped:
        return ""
    return " (ignored: " + ", ".join(f"{r} {n}" for r, n in sorted(skipped.items())) + ")"


def unread(consumer: Consumer, tp: TopicPartition) -> bool:
    """Whether ``tp`` still has records ``consumer`` has not read (as far as the consumer
    knows, without asking the broker)."""
    try:
        marks = consumer.get_watermark_offsets(tp, cached=True)
        (position,) = consumer.position([tp])
    except (KafkaException, RuntimeError, ValueError) as exc:
        log.debug("no position for %s[%d]: %s", tp.topic, tp.partition, exc)
        return False
    if marks is None or marks[1] < 0 or position.offset < 0:
        return False
    return bool(position.offset < marks[1])
