"""Clients of a Kafka cluster's admin side: an ``AdminClient``, a ping, partition counts, and
the offsets consumer that reads a partition's start and end offsets.

Works against any cluster; ``config`` carries extra librdkafka properties (SASL, TLS), e.g.
``KafkaSettings.client_config("admin")``. Failures are
:class:`KafkaAdminError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streamfolio.errors import StreamfolioError

__all__ = [
    "KafkaAdminError",
    "admin_client",
    "error_of",
    "offsets_consumer",
    "partition_count",
    "ping",
    "read_watermarks",
    "transient",
]

_STATUS_GROUP = "streamfolio-status"  # required by Consumer(); never joined, never committed


class KafkaAdminError(StreamfolioError):
    """A topic could not be created, grown or described. The message names it and the fix."""


def _quiet_logger() -> logging.Logger:
    # librdkafka logs every refused connection at ERROR; while polling a broker that is still
    # starting those lines are expected noise, and the caller reports the outcome itself.
    logger = logging.getLogger("streamfolio.kafka.librdkafka.quiet")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger


def admin_client(
    bootstrap: str, config: Mapping[str, str] | None = None, *, quiet: bool = False
) -> AdminClient:
    """An ``AdminClient`` for ``bootstrap`` with extra librdkafka ``config``.

    ``quiet`` drops librdkafka's own log lines (connection refused and the like).
    """
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, **(config or {})}
    if quiet:
        conf["logger"] = _quiet_logger()
    return AdminClient(conf)


def partition_count(
    bootstrap: str,
    topic: str,
    *,
    timeout: float = 10.0,
    config: Mapping[str, str] | None = None,
) -> int | None:
    """How many partitions ``topic`` has, or None if the broker does not answer or the topic
    does not exist."""
    try:
        metadata = admin_client(bootstrap, config, quiet=True).list_topics(topic, timeout=timeout)
    except KafkaException:
        return None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return None
    return len(found.partitions)


def ping(bootstrap: str, *, timeout: float = 1.0, config: Mapping[str, str] | None = None) -> bool:
    """True if a broker at ``bootstrap`` answers a metadata request within ``timeout`` seconds."""
    try:
        admin_client(bootstrap, config, quiet=True).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def error_of(exc: BaseException) -> KafkaError | None:
    """The ``KafkaError`` a ``KafkaException`` carries, if any."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def offsets_consumer(bootstrap: str, config: Mapping[str, str] | None) -> Consumer:
    """A consumer that only reads offsets: never subscribes, joins a group or commits."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": _STATUS_GROUP,
            "enable.auto.commit": False,
            # The high watermark, not the last stable offset: reports count every record.
            "isolation.level": "read_uncommitted",
            **(config or {}),
        }
    )


def read_watermarks(
    consumer: Consumer, topic: str, partition: int, bootstrap: str, deadline: float
) -> tuple[int, int]:
    """``(start, end)`` offsets of one partition, retrying transient errors until ``deadline``
    (a partition whose leadership is still moving answers NOT_LEADER for a moment)."""
    while True:
        remaining = max(deadline - time.monotonic(), 0.5)
        try:
            found = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=remaining, cached=False
            )
        except KafkaException as exc:
            error = error_of(exc)
            if error is None or not transient(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
            continue
        if found is None:
            raise KafkaAdminError(f"no offsets for {topic}[{partition}] at {bootstrap} in time")
        return int(found[0]), int(found[1])


def transient(error: KafkaError) -> bool:
    """True for errors that pass while leadership moves or metadata spreads."""
    return bool(error.retriable()) or error.code() in {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
