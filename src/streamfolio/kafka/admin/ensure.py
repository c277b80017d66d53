"""Creating topics: :func:`ensure_topics` creates the missing ones, grows those with too few
partitions and waits until every partition has a leader; :func:`topic_config` reads a topic's
configs back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException

# The documented import path; confluent-kafka's stubs re-export these without listing them.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from streamfolio.kafka.admin.client import (
    KafkaAdminError,
    admin_client,
    error_of,
    offsets_consumer,
    read_watermarks,
)
from streamfolio.kafka.admin.specs import TopicSpec

__all__ = ["EnsureResult", "ensure_topics", "topic_config"]


@dataclass(frozen=True)
class EnsureResult:
    """What :func:`ensure_topics` did: topics created, grown to more partitions, or left as they
    were (already there with enough partitions; configs of existing topics are not changed)."""

    created: tuple[str, ...] = ()
    grown: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()


def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    timeout: float = 30.0,
    config: Mapping[str, str] | None = None,
) -> EnsureResult:
    """Create the topics in ``specs`` that do not exist; grow existing ones that have fewer
    partitions than specified. Idempotent. Returns once every partition of every topic has a
    leader, so a producer can write at once.

    Existing topics keep their configs, and a topic with more partitions than specified is left
    as it is (Kafka cannot shrink a topic).
    """
    admin = admin_client(bootstrap, config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaAdminError(
            f"cannot reach Kafka at {bootstrap}: {exc}; is the broker running "
            "(`streamfolio kafka status`)?"
        ) from None
    created: list[str] = []
    grown: list[str] = []
    existing: list[str] = []
    to_create = [s for s in specs if s.name not in metadata.topics]
    if to_create:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    config=dict(s.configs),
                )
                for s in to_create
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for spec in to_create:
            try:
                futures[spec.name].result(timeout=timeout)
                created.append(spec.name)
            except KafkaException as exc:
                error = error_of(exc)
                if error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    existing.append(spec.name)  # created concurrently by someone else
                    continue
                raise KafkaAdminError(
                    f"cannot create topic {spec.name!r} ({spec.partitions} partitions, "
                    f"replication {spec.replication_factor}) at {bootstrap}: {exc}"
                ) from None
    to_grow = [
        s
        for s in specs
        if s.name in metadata.topics and len(metadata.topics[s.name].partitions) < s.partitions
    ]
    if to_grow:
        futures = admin.create_partitions(
            [NewPartitions(s.name, s.partitions) for s in to_grow],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for spec in to_grow:
            try:
                futures[spec.name].result(timeout=timeout)
            except KafkaException as exc:
                raise KafkaAdminError(
                    f"cannot grow topic {spec.name!r} to {spec.partitions} partitions: {exc}"
                ) from None
            grown.append(spec.name)
    existing += [s.name for s in specs if s.name in metadata.topics and s not in to_grow]
    _wait_until_served(admin, specs, bootstrap, timeout, config)
    return EnsureResult(tuple(created), tuple(grown), tuple(existing))


def _wait_until_served(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    bootstrap: str,
    timeout: float,
    config: Mapping[str, str] | None,
) -> None:
    # CreateTopics returns once the controller has accepted the topics; the broker learns of
    # them from the metadata log a moment later, and until it has made itself leader a producer
    # or a ListOffsets request gets UNKNOWN_TOPIC or NOT_LEADER. Wait for the metadata, then for
    # every partition to answer a ListOffsets request.
    deadline = time.monotonic() + timeout
    pending = {s.name: s.partitions for s in specs}
    while pending:
        metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.5))
        for name, wanted in list(pending.items()):
            topic = metadata.topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and len(topic.partitions) >= wanted
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                del pending[name]
        if pending and time.monotonic() >= deadline:
            raise KafkaAdminError(
                f"topics {sorted(pending)} at {bootstrap} have no leader after {timeout:g} s; "
                "check the broker log"
            )
        if pending:
            time.sleep(0.1)
    consumer = offsets_consumer(bootstrap, config)
    try:
        for spec in specs:
            for partition in range(spec.partitions):
                read_watermarks(consumer, spec.name, partition, bootstrap, deadline)
    finally:
        consumer.close()


def topic_config(
    bootstrap: str, name: str, *, timeout: float = 10.0, config: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The configs set on topic ``name`` (not the broker defaults), e.g. ``retention.ms``."""
    admin = admin_client(bootstrap, config)
    resource = ConfigResource(ResourceType.TOPIC, name)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout=timeout
        )
    except KafkaException as exc:
        raise KafkaAdminError(f"cannot describe topic {name!r} at {bootstrap}: {exc}") from None
    return {
        key: str(entry.value)
        for key, entry in entries.items()
        if not entry.is_default and entry.value is not None
    }
