"""What a cluster holds: :func:`describe` reports its topics' partitions, start and end offsets
and its consumer groups' lag, as a :class:`TopicReport`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka.admin import AdminClient

from streamfolio.kafka.admin.client import (
    KafkaAdminError,
    admin_client,
    offsets_consumer,
    read_watermarks,
)

__all__ = [
    "GroupLag",
    "PartitionLag",
    "PartitionState",
    "TopicReport",
    "TopicState",
    "describe",
]


@dataclass(frozen=True)
class PartitionState:
    """One partition: its leader (-1 if none) and its start and end (high-watermark) offsets."""

    partition: int
    leader: int
    start_offset: int
    end_offset: int

    @property
    def messages(self) -> int:
        """Offsets still retained (start to end); transaction markers count too."""
        return max(self.end_offset - self.start_offset, 0)


@dataclass(frozen=True)
class TopicState:
    """A topic and its partitions, in partition order."""

    name: str
    partitions: tuple[PartitionState, ...]

    @property
    def end_offsets(self) -> tuple[int, ...]:
        """The end offset of each partition, in partition order."""
        return tuple(p.end_offset for p in self.partitions)

    @property
    def messages(self) -> int:
        """Retained offsets over all partitions."""
        return sum(p.messages for p in self.partitions)


@dataclass(frozen=True)
class PartitionLag:
    """A group's committed offset on one partition and how far the end is ahead of it.

    ``committed`` and ``lag`` are None when the group committed nothing there."""

    topic: str
    partition: int
    committed: int | None
    end_offset: int
    lag: int | None


@dataclass(frozen=True)
class GroupLag:
    """A consumer group: its state (``stable``, ``empty``, …) and lag per committed partition."""

    group_id: str
    state: str
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        """Total lag over the partitions the group committed on."""
        return sum(p.lag or 0 for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: state, total lag, and each partition's committed offset, end
        offset and lag (``kafka status --json``)."""
        return {
            "group_id": self.group_id,
            "state": self.state,
            "lag": self.lag,
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed": p.committed,
                    "end_offset": p.end_offset,
                    "lag": p.lag,
                }
                for p in self.partitions
            ],
        }


@dataclass(frozen=True)
class TopicReport:
    """Topics (sorted by name) and consumer groups (sorted by id) of a cluster."""

    bootstrap: str
    topics: tuple[TopicState, ...]
    groups: tuple[GroupLag, ...]

    def topic(self, name: str) -> TopicState:
        """The topic called ``name``; KeyError if the report has none."""
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)

    def group(self, group_id: str) -> GroupLag:
        """The consumer group ``group_id``; KeyError if the report has none."""
        for group in self.groups:
            if group.group_id == group_id:
                return group
        raise KeyError(group_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with per-topic and per-group totals."""
        return {
            "bootstrap": self.bootstrap,
            "topics": [
                {
                    "name": t.name,
                    "partitions": len(t.partitions),
                    "messages": t.messages,
                    "end_offsets": list(t.end_offsets),
                    "partition_details": [
                        {
                            "partition": p.partition,
                            "leader": p.leader,
                            "start_offset": p.start_offset,
                            "end_offset": p.end_offset,
                        }
                        for p in t.partitions
                    ],
                }
                for t in self.topics
            ],
            "groups": [g.to_dict() for g in self.groups],
        }


def describe(
    bootstrap: str,
    *,
    topics: Iterable[str] | None = None,
    include_internal: bool = False,
    timeout: float = 10.0,
    config: Mapping[str, str] | None = None,
) -> TopicReport:
    """Partitions, start/end offsets and consumer-group lag at ``bootstrap``.

    ``topics`` limits the report (and the groups' partitions) to those names; by default it has
    every topic but Kafka's internal ``__…`` ones. End offsets are high watermarks (what a
    ``read_uncommitted`` consumer can reach); lag is the end offset minus the group's committed
    offset.
    """
    admin = admin_client(bootstrap, config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaAdminError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    wanted = set(topics) if topics is not None else None
    names = sorted(
        name
        for name in metadata.topics
        if (wanted is None or name in wanted) and (include_internal or not name.startswith("__"))
    )
    consumer = offsets_consumer(bootstrap, config)
    deadline = time.monotonic() + timeout
    try:
        marks: dict[tuple[str, int], tuple[int, int]] = {}

        def watermarks(topic: str, partition: int) -> tuple[int, int]:
            key = (topic, partition)
            if key not in marks:
                marks[key] = read_watermarks(consumer, topic, partition, bootstrap, deadline)
            return marks[key]

        states = []
        for name in names:
            partitions = metadata.topics[name].partitions
            states.append(
                TopicState(
                    name,
                    tuple(
                        PartitionState(pid, partitions[pid].leader, *watermarks(name, pid))
                        for pid in sorted(partitions)
                    ),
                )
            )
        groups = _group_lags(admin, wanted, watermarks, timeout)
    except KafkaException as exc:
        raise KafkaAdminError(f"cannot describe topics at {bootstrap}: {exc}") from None
    finally:
        consumer.close()
    return TopicReport(bootstrap, tuple(states), groups)


def _group_lags(
    admin: AdminClient,
    wanted: set[str] | None,
    watermarks: Callable[[str, int], tuple[int, int]],
    timeout: float,
) -> tuple[GroupLag, ...]:
    listed = admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout)
    reports = []
    for listing in sorted(listed.valid, key=lambda g: str(g.group_id)):
        group_id = str(listing.group_id)
        state = getattr(listing, "state", None)
        # The offsets API takes one group per request (confluent-kafka's documented limit).
        request = [ConsumerGroupTopicPartitions(group_id)]
        offsets = admin.list_consumer_group_offsets(request, request_timeout=timeout)
        result = offsets[group_id].result(timeout=timeout)
        lags = []
        for tp in sorted(result.topic_partitions or [], key=lambda t: (t.topic, t.partition)):
            if wanted is not None and tp.topic not in wanted:
                continue
            end = watermarks(tp.topic, tp.partition)[1]
            # OFFSET_INVALID: the group has no committed offset for this partition.
            committed = None if tp.offset == OFFSET_INVALID or tp.offset < 0 else int(tp.offset)
            lag = None if committed is None else max(end - committed, 0)
            lags.append(PartitionLag(tp.topic, tp.partition, committed, end, lag))
        if wanted is not None and not lags:
            continue
        reports.append(
            GroupLag(group_id, state.name.lower() if state is not None else "unknown", tuple(lags))
        )
    return tuple(reports)
