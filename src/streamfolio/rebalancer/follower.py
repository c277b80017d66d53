"""Keeping the rebalancer's memory current: reading its topics into a :class:`~.memory.Memory`.

:class:`TopicFollower` reads the weights, rebalance-events and initial-statistics topics from the
beginning, all partitions, outside the consumer group, with ``isolation.level=read_committed``,
and :meth:`TopicFollower.catch_up` reads to their ends (the last stable offsets) so that decisions
another instance committed are known before this one takes over a partition.

Every record of the three topics is judged by :class:`~streamfolio.intake.Intake` first
(:class:`MemoryReader`, which needs no Kafka): one that is undecodable, invalid, stamped in the
future, keyed elsewhere, for an unknown portfolio, or that does not fit its portfolio (weights
outside its bounds, statistics of other tickers) changes nothing and is counted by reason (the
first of each reason is logged). The memory is only a reader of these topics and reads them again
at every start, so it dead-letters nothing: the streaming job dead-letters the weights and
initial statistics it refuses, once.

A record for a portfolio the intake does not know (or does not fit) may be of a portfolio defined
a moment ago on the portfolios topic: ``refresh`` (reading that topic to its end) is called and
the record judged again once, if it brought anything new.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

# The documented import path; confluent-kafka's stubs re-export these without listing them.
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from streamfolio.config import Settings
from streamfolio.errors import StreamfolioError
from streamfolio.intake import Intake, Rejected
from streamfolio.kafka.outage import observed, stop_through_callbacks
from streamfolio.kafka.topics import TopicContract, contract
from streamfolio.portfolio_book import PERHAPS_NEWLY_DEFINED
from streamfolio.rebalancer.memory import DECISIONS, Memory

__all__ = ["MemoryReader", "MemoryRole", "MemoryTopicsError", "TopicFollower"]

log = logging.getLogger(__name__)

MemoryRole = Literal["weights", "rebalance_events", "initial_stats"]
"""The topics the memory is rebuilt from."""


class MemoryTopicsError(StreamfolioError):
    """The memory topics could not be read (timeout, missing topic)."""


class MemoryReader:
    """Judges each record of the memory topics through an :class:`Intake` and applies the
    accepted ones to a :class:`Memory` (no Kafka here: :class:`TopicFollower` feeds it).

    A refused record changes nothing; it is counted by reason in :attr:`skipped` (``undecodable``,
    ``invalid_weights``, ``invalid_event``, ``invalid_stats``, ``future``, ``key_mismatch``,
    ``unknown_portfolio``, and ``stale`` for weights older than those held) and the first of each
    reason is logged. Nothing is dead-lettered (see the module doc).
    """

    def __init__(
        self, memory: Memory, intake: Intake, refresh: Callable[[], int] | None = None
    ) -> None:
        self.memory = memory
        self.intake = intake
        self.skipped: Counter[str] = Counter()
        self._refresh = refresh

    def read(self, role: MemoryRole, value: bytes, key: bytes | None, topic: str = "") -> bool:
        """Judge and apply one record of topic ``role``; True if it changed the memory."""
        try:
            return self._apply(role, value, key)
        except Rejected as refused:
            retry = refused.reason in PERHAPS_NEWLY_DEFINED and self._refresh is not None
            if retry and self._refresh is not None and self._refresh():
                try:
                    return self._apply(role, value, key)
                except Rejected as again:
                    refused = again
            self._skip(refused, topic or role)
            return False

    def _apply(self, role: MemoryRole, value: bytes, key: bytes | None) -> bool:
        # Raises Rejected: the caller counts it.
        if role == "weights":
            weights = self.intake.weights(value, key)
            stale = self.memory.committed(weights.portfolio_id).stale_weights(weights)
            if stale is not None:
                raise Rejected("stale", f"{weights.portfolio_id}: {stale}")
            return self.memory.on_weights(weights)
        if role == "rebalance_events":
            event = self.intake.rebalance_event(value, key)
            if event.decision not in DECISIONS:
                raise Rejected(
                    "invalid_event",
                    f"{event.portfolio_id}: decision {event.decision[:32]!r} is not one of "
                    f"{', '.join(DECISIONS)}",
                )
            return self.memory.on_event(event)
        return self.memory.on_initial_stats(self.intake.initial_stats(value, key))

    def _skip(self, refused: Rejected, topic: str) -> None:
        if self.skipped[refused.reason] == 0:
            log.warning(
                "memory: ignoring a record of %s (%s: %s); further ones are only counted",
                topic,
                refused.reason,
                refused.detail[:500],
            )
        self.skipped[refused.reason] += 1


_LATEST: Final = OffsetSpec.latest()  # type: ignore[no-untyped-call]


def _is_partition_eof(message: Message) -> bool:
    error = message.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


class TopicFollower:
    """Reads the weights, rebalance-events and initial-statistics topics into a :class:`Memory`.

    It assigns itself every partition of the three topics from the beginning (no group
    membership, nothing committed) and reads with ``isolation.level=read_committed``, so it sees
    exactly the decisions whose transactions committed. Every record goes through a
    :class:`MemoryReader`: those the intake refuses are skipped and counted by reason (they are
    other producers' mistakes; the job dead-letters the weights and seeds it refuses).
    """

    def __init__(
        self,
        settings: Settings,
        memory: Memory,
        *,
        group_id: str,
        intake: Intake | None = None,
        extra_config: Mapping[str, Any] | None = None,
        refresh: Callable[[], int] | None = None,
    ) -> None:
        self.reader = MemoryReader(
            memory, intake if intake is not None else Intake.from_settings(settings), refresh
        )
        self._contracts: dict[str, TopicContract] = {
            c.name: c
            for c in (
                contract(settings, "weights"),
                contract(settings, "rebalance_events"),
                contract(settings, "initial_stats"),
            )
        }
        config: dict[str, Any] = {
            **settings.kafka.client_config("rebalancer"),
            # Required by librdkafka; this consumer never joins the group nor commits.
            "group.id": f"{group_id}.memory",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            **(extra_config or {}),
        }
        self._consumer = Consumer(observed(config))
        admin_config: dict[str, Any] = {
            **settings.kafka.client_config("rebalancer"),
            "logger": logging.getLogger("streamfolio.librdkafka"),
        }
        self._admin = AdminClient(admin_config)
        self._partitions = self._all_partitions()
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self._partitions])
        self._next: dict[tuple[str, int], int] = {}
        self.read = 0

    @property
    def skipped(self) -> Counter[str]:
        """Records ignored, by reason (see :class:`MemoryReader`)."""
        return self.reader.skipped

    def _all_partitions(self) -> list[tuple[str, int]]:
        metadata = self._consumer.list_topics(timeout=10)
        partitions: list[tuple[str, int]] = []
        for name in self._contracts:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                raise MemoryTopicsError(
                    f"topic {name!r} does not exist; create the configured topics first "
                    "(streamfolio kafka up, or ensure_topics)"
                )
            partitions.extend((name, p) for p in sorted(topic.partitions))
        return partitions

    def drain(self, max_messages: int = 1000) -> int:
        """Apply what has already been fetched, without waiting; returns how many were read."""
        with stop_through_callbacks():
            messages = self._consumer.consume(num_messages=max_messages, timeout=0)
        for message in messages:
            self._handle(message)
        return len(messages)

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read every partition up to its end as of now (its last stable offset).

        Raises :class:`MemoryTopicsError` if that takes longer than ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        ends = self._end_offsets(timeout_s)
        behind = {tp for tp, end in ends.items() if self._position(tp) < end}
        while behind:
            if time.monotonic() > deadline:
                raise MemoryTopicsError(
                    f"could not read the memory topics to their end within {timeout_s:g} s "
                    f"({len(behind)} partition(s) behind)"
                )
            with stop_through_callbacks():
                messages = self._consumer.consume(num_messages=1000, timeout=0.05)
            for message in messages:
                self._handle(message)
            if any(self._position(tp) < ends[tp] for tp in behind):
                # Transaction markers and aborted records are skipped inside the client: only
                # its position says that it went past them.
                for tp in self._consumer.position([TopicPartition(t, p) for t, p in behind]):
                    if tp.offset >= 0:
                        key = (tp.topic, tp.partition)
                        self._next[key] = max(self._next.get(key, 0), tp.offset)
            behind = {tp for tp in behind if self._position(tp) < ends[tp]}

    def _end_offsets(self, timeout_s: float) -> dict[tuple[str, int], int]:
        # One request for every partition, on the admin client's own connection: the consumer's
        # connection is often held by a long-polling fetch. READ_COMMITTED gives the last stable
        # offset: everything before it is decided (committed or aborted), nothing after it is.
        futures = self._admin.list_offsets(
            {TopicPartition(t, p): _LATEST for t, p in self._partitions},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=timeout_s,
        )
        ends: dict[tuple[str, int], int] = {}
        try:
            for tp, future in futures.items():
                ends[(tp.topic, tp.partition)] = int(future.result().offset)
        except KafkaException as exc:
            raise MemoryTopicsError(
                f"cannot read the end offsets of the memory topics: {exc}"
            ) from None
        return ends

    def _position(self, tp: tuple[str, int]) -> int:
        return self._next.get(tp, 0)

    def _handle(self, message: Message) -> None:
        if message.error() is not None:
            if _is_partition_eof(message):
                return
            error = message.error()
            if error is not None and error.fatal():
                raise KafkaException(error)
            log.warning("reading the memory topics: %s", error)
            return
        topic = message.topic() or ""
        partition = message.partition()
        offset = message.offset()
        if partition is not None and offset is not None:
            self._next[(topic, partition)] = offset + 1
        self.read += 1
        contract_ = self._contracts.get(topic)
        if contract_ is None:
            return
        role: MemoryRole
        if contract_.role == "weights":
            role = "weights"
        elif contract_.role == "rebalance_events":
            role = "rebalance_events"
        else:
            role = "initial_stats"
        self.reader.read(role, message.value() or b"", message.key(), topic)

    def close(self) -> None:
        self._consumer.close()
