"""Topics of a Kafka cluster: create the configured ones, report offsets and consumer-group lag.

Works against any cluster; ``config`` carries extra librdkafka properties (SASL, TLS), e.g.
``KafkaSettings.client_config()`` without its ``bootstrap.servers``.

>>> from streamfolio.config import example_config_path, load_config
>>> specs = topic_specs(load_config(example_config_path(), environ={}))
>>> [(s.name, s.partitions, dict(s.configs)) for s in specs][1:3]
[('portfStats', 3, {...'retention.ms': '-1'}), ('Weights', 3, {...'retention.ms': '-1'})]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

# The documented import path; confluent-kafka's stubs re-export these without listing them.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from streamfolio.errors import StreamfolioError

if TYPE_CHECKING:
    from streamfolio.config import Settings

__all__ = [
    "EnsureResult",
    "GroupLag",
    "KafkaAdminError",
    "PartitionLag",
    "PartitionState",
    "TopicReport",
    "TopicSpec",
    "TopicState",
    "admin_client",
    "describe",
    "ensure_topics",
    "ping",
    "topic_config",
    "topic_specs",
]

KEEP_FOREVER = {"retention.ms": "-1"}
ANY_TIMESTAMP = {"message.timestamp.after.max.ms": str(2**63 - 1)}
"""Topic configs for the topics that are a service's memory: the rebalancer rebuilds its latest
weights per portfolio from ``weights`` and the job its starting statistics from ``initial_stats``,
so these must outlive the default 7 days. Delete policy (not compact) keeps the full history."""

_STATUS_GROUP = "streamfolio-status"  # required by Consumer(); never joined, never committed


class KafkaAdminError(StreamfolioError):
    """A topic could not be created, grown or described. The message names it and the fix."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the project needs: name, partition count, replication factor and topic configs."""

    name: str
    partitions: int
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EnsureResult:
    """What :func:`ensure_topics` did: topics created, grown to more partitions, or left as they
    were (already there with enough partitions; configs of existing topics are not changed)."""

    created: tuple[str, ...] = ()
    grown: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()


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
            "groups": [
                {
                    "group_id": g.group_id,
                    "state": g.state,
                    "lag": g.lag,
                    "partitions": [
                        {
                            "topic": p.topic,
                            "partition": p.partition,
                            "committed": p.committed,
                            "end_offset": p.end_offset,
                            "lag": p.lag,
                        }
                        for p in g.partitions
                    ],
                }
                for g in self.groups
            ],
        }


# ------------------------------------------------------------------------------------- specs


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics ``settings`` names, each with ``kafka.partitions`` partitions.

    Every role gets the same partition count, the dead-letter topic included, so that keyed
    records of one portfolio or ticker stay in one partition across topics. ``weights`` and
    ``initial_stats`` keep their records forever (:data:`KEEP_FOREVER`). Record timestamps are
    event times, which a replay or a sped-up simulation puts far from the wall clock, so no
    topic refuses a timestamp for being in the future (Kafka 4 refuses beyond one hour by
    default, :data:`ANY_TIMESTAMP`).
    """
    topics = settings.topics
    # The rebalancer rebuilds its memory from the weights and events topics: keep them.
    kept = {topics.weights, topics.initial_stats, topics.rebalance_events}
    return [
        TopicSpec(
            name=name,
            partitions=settings.kafka.partitions,
            replication_factor=settings.kafka.replication_factor,
            configs={**ANY_TIMESTAMP, **(KEEP_FOREVER if name in kept else {})},
        )
        for name in topics.model_dump().values()
    ]


# ------------------------------------------------------------------------------------ clients


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


# -------------------------------------------------------------------------------------- topics


def _error_of(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


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
                error = _error_of(exc)
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
    consumer = _offsets_consumer(bootstrap, config)
    try:
        for spec in specs:
            for partition in range(spec.partitions):
                _watermarks(consumer, spec.name, partition, bootstrap, deadline)
    finally:
        consumer.close()


def _offsets_consumer(bootstrap: str, config: Mapping[str, str] | None) -> Consumer:
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


def _watermarks(
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
            error = _error_of(exc)
            if error is None or not _transient(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
            continue
        if found is None:
            raise KafkaAdminError(f"no offsets for {topic}[{partition}] at {bootstrap} in time")
        return int(found[0]), int(found[1])


def _transient(error: KafkaError) -> bool:
    return bool(error.retriable()) or error.code() in {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }


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


# ------------------------------------------------------------------------------------ describe


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
    consumer = _offsets_consumer(bootstrap, config)
    deadline = time.monotonic() + timeout
    try:
        marks: dict[tuple[str, int], tuple[int, int]] = {}

        def watermarks(topic: str, partition: int) -> tuple[int, int]:
            key = (topic, partition)
            if key not in marks:
                marks[key] = _watermarks(consumer, topic, partition, bootstrap, deadline)
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
