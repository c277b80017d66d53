"""Producers and consumers of Avro records, and the dead-letter sink.

* :class:`RecordProducer` encodes records with their topic's schema and produces them keyed as
  the topic expects, with ``acks=all`` and idempotence. A message it has accepted is never given
  up: ``message.timeout.ms=0`` makes librdkafka retry until the broker is back. A process
  that must stop first takes what is left out with :meth:`RecordProducer.purge`, to keep it in
  an :class:`~streamfolio.kafka.unsent.UnsentFile` for its next run.
* :class:`RecordConsumer` decodes what it reads; a message that does not decode comes back with
  its error instead of a record, so the caller can dead-letter it and go on.
* :class:`DeadLetters` writes such messages to the dead-letter topic with a reason, counts them
  by reason and logs each reason once.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamfolio.config import Component, KafkaSettings
from streamfolio.errors import SchemaError
from streamfolio.kafka.outage import observed, stop_through_callbacks
from streamfolio.kafka.topics import TopicContract
from streamfolio.kafka.unsent import UnsentMessage
from streamfolio.serde import codec_for

log = logging.getLogger(__name__)

_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


def producer_config(kafka: KafkaSettings, component: Component, **overrides: Any) -> dict[str, Any]:
    """librdkafka producer settings of ``component``: durable and ordered per key, never drops
    accepted data."""
    config: dict[str, Any] = {
        **kafka.client_config(component),
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": 0,  # infinite: wait out a broker restart rather than lose a tick
        "linger.ms": 5,
        "compression.type": "lz4",
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
    }
    config.update(overrides)
    # librdkafka's notices go to logging, and a broker outage is reported once, not per retry.
    return observed(config)


class RecordProducer:
    """Produces Avro-encoded records keyed as each topic's contract says.

    Every message carries its place in the production order and its timestamp to its delivery
    callback (librdkafka reports no timestamp with an error), so that :meth:`purge` can give
    back what was not delivered exactly as it was produced.
    """

    def __init__(self, kafka: KafkaSettings, *, component: Component, **overrides: Any) -> None:
        self._producer = Producer(producer_config(kafka, component, **overrides))
        self.delivered = 0
        self.delivered_to: Counter[tuple[str, int]] = Counter()
        """Messages delivered, by topic and partition (``topic produce`` reports them)."""
        self.failed = 0
        self._errors: Counter[str] = Counter()
        # next() on a count is atomic: the feed's thread and its heartbeat thread both produce.
        self._order = itertools.count()
        self._stopping = False
        self._unsent: list[tuple[int, UnsentMessage]] = []

    def _on_delivery(
        self, order: int, timestamp_ms: int | None, error: KafkaError | None, message: Message
    ) -> None:
        if error is None:
            self.delivered += 1
            self.delivered_to[(message.topic() or "", message.partition() or 0)] += 1
            return
        if error.code() in _PURGED:
            # Taken out by purge(), to be kept by the caller: not a failure.
            unsent = UnsentMessage(
                message.topic() or "",
                message.partition(),
                message.key(),
                message.value() or b"",
                timestamp_ms,
            )
            self._unsent.append((order, unsent))
            return
        self.failed += 1
        name = error.name()
        if self._errors[name] == 0:
            log.error("delivery failed (%s); further failures of this kind are only counted", error)
        self._errors[name] += 1

    def send(
        self, contract: TopicContract, record: Mapping[str, Any], *, timestamp_ms: int | None = None
    ) -> None:
        """Encode and produce ``record``; raises :class:`SchemaError` when it does not fit."""
        value = codec_for(contract.schema).encode(record)
        self.send_raw(
            contract.name, contract.key_of(dict(record)), value, timestamp_ms=timestamp_ms
        )

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Produce bytes as they are (None: a tombstone); waits for room when the local queue
        is full.

        ``partition`` None lets the partitioner choose from the key (heartbeats name theirs).
        After :meth:`stop_waiting`, a message that finds the queue full is not waited for but
        kept for :meth:`purge`.
        """
        order = next(self._order)
        stamp = None if timestamp_ms is None else int(timestamp_ms)
        kwargs: dict[str, Any] = {
            "key": key,
            "value": value,
            "on_delivery": partial(self._on_delivery, order, stamp),
        }
        if stamp is not None:
            kwargs["timestamp"] = stamp
        if partition is not None:
            kwargs["partition"] = int(partition)
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                if self._stopping:
                    self._unsent.append(
                        (order, UnsentMessage(topic, partition, key, value or b"", stamp))
                    )
                    return
                self._producer.poll(0.05)
        self._producer.poll(0)

    def stop_waiting(self) -> None:
        """From now on, :meth:`send_raw` never waits for room in a full queue (its caller is
        stopping: what does not fit is kept for :meth:`purge`). Safe from a signal handler."""
        self._stopping = True

    def purge(self) -> list[UnsentMessage]:
        """Take every message not yet delivered out of the producer, and return them in the
        order they were produced (with those :meth:`send_raw` kept after :meth:`stop_waiting`).

        Messages in flight are taken out too: the broker may have written some of them, so
        producing them again may repeat them (at least once, never lost).
        """
        self._producer.purge()
        self._producer.flush(0)  # serves the purged messages' delivery callbacks
        unsent, self._unsent = self._unsent, []
        unsent.sort()  # by production order: each order is unique, so messages never compare
        return [message for _, message in unsent]

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        """How many partitions ``topic`` has, from the producer's metadata; 0 if it has none yet.

        Raises :class:`~confluent_kafka.KafkaException` when the broker does not answer in time.
        """
        metadata = self._producer.list_topics(topic, timeout=timeout)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return 0
        return len(found.partitions)

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still in flight."""
        remaining: int = self._producer.flush(timeout)
        return remaining

    def __len__(self) -> int:
        return len(self._producer)


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One message read: its decoded record, or why it could not be decoded."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int
    value: bytes
    record: dict[str, Any] | None
    error: str | None = None


def consumer_config(
    kafka: KafkaSettings,
    group_id: str,
    *,
    component: Component,
    from_beginning: bool,
    read_committed: bool = True,
) -> dict[str, Any]:
    return observed(
        {
            **kafka.client_config(component),
            "group.id": group_id,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )


class RecordConsumer:
    """Reads and decodes records from topics with known contracts."""

    def __init__(
        self,
        kafka: KafkaSettings,
        contracts: Sequence[TopicContract],
        *,
        component: Component,
        group_id: str,
        from_beginning: bool = False,
        read_committed: bool = True,
        assign_all: bool = False,
        decode: bool = True,
        partitions: Collection[int] | None = None,
        start_at_ms: int | None = None,
        partition_eof: bool = False,
    ) -> None:
        """With ``assign_all`` (tools that read whole topics, outside any group), ``partitions``
        keeps only those partitions, ``start_at_ms`` starts each at its first message with a
        Kafka timestamp at or after it, and ``partition_eof`` notes in :attr:`at_end` each
        partition whose end the consumer reached."""
        self._contracts = {c.name: c for c in contracts}
        self.at_end: set[tuple[str, int]] = set()
        """Partitions read to their end (``partition_eof``) since last cleared."""
        # A reader that judges the raw bytes itself (through streamfolio.intake) skips this.
        self._decode = decode
        config = consumer_config(
            kafka,
            group_id,
            component=component,
            from_beginning=from_beginning,
            read_committed=read_committed,
        )
        if partition_eof:
            config["enable.partition.eof"] = True
        self._consumer = Consumer(config)
        names = list(self._contracts)
        if assign_all:
            # Tools that read a whole topic (tail) take every partition without joining a group.
            chosen: list[TopicPartition] = []
            metadata = self._consumer.list_topics(timeout=10)
            for name in names:
                topic = metadata.topics.get(name)
                if topic is None or topic.error is not None:
                    raise KafkaException(f"topic {name!r} does not exist")
                for p in topic.partitions:
                    if partitions is not None and p not in partitions:
                        continue
                    offset = -2 if from_beginning else -1  # OFFSET_BEGINNING / OFFSET_END
                    chosen.append(TopicPartition(name, p, offset))
            if start_at_ms is not None:
                wanted = [TopicPartition(tp.topic, tp.partition, start_at_ms) for tp in chosen]
                # -1 (none that late) starts at the end: nothing of that partition qualifies.
                chosen = self._consumer.offsets_for_times(wanted, timeout=10)
            self._consumer.assign(chosen)
        else:
            self._consumer.subscribe(names)

    def poll(self, timeout: float = 1.0) -> ConsumedRecord | None:
        """The next message, decoded unless the consumer was made with ``decode=False``; None
        when nothing arrived within ``timeout``."""
        with stop_through_callbacks():
            message = self._consumer.poll(timeout)
        if message is None:
            return None
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self.at_end.add((message.topic() or "", message.partition() or 0))
                return None
            raise KafkaException(error)
        topic = message.topic() or ""
        value = message.value() or b""
        _, ts = message.timestamp()
        record: dict[str, Any] | None = None
        problem: str | None = None
        if self._decode:
            try:
                record = codec_for(self._contracts[topic].schema).decode(value)
            except SchemaError as exc:
                problem = str(exc)
        return ConsumedRecord(
            topic,
            message.partition() or 0,
            message.offset() or 0,
            message.key(),
            ts,
            value,
            record,
            problem,
        )

    def records(
        self, *, timeout: float, max_records: int | None = None
    ) -> Iterator[ConsumedRecord]:
        """Yield records until ``max_records`` or ``timeout`` seconds without a new one."""
        count = 0
        idle_since = time.monotonic()
        while max_records is None or count < max_records:
            item = self.poll(min(0.5, timeout))
            if item is None:
                if time.monotonic() - idle_since >= timeout:
                    return
                continue
            idle_since = time.monotonic()
            count += 1
            yield item

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this consumer reads, as (topic, partition)."""
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def end_offsets(self, timeout: float = 10.0) -> dict[tuple[str, int], int]:
        """The broker's end offset (the next offset to be written) of every assigned partition,
        asked now."""
        ends: dict[tuple[str, int], int] = {}
        for topic, partition in self.assignment():
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            ends[(topic, partition)] = high
        return ends

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset this consumer reads from each assigned partition (negative: none
        yet); past compacted gaps and transaction markers, which no record shows."""
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in self._consumer.position(self._consumer.assignment())
        }

    def commit(self, *, asynchronous: bool = False) -> None:
        """Commit the positions. Synchronous waits for the coordinator's answer, without a
        bound: a broker that goes away at that moment holds the caller (and its signals) until
        it is back; asynchronous only queues the commit."""
        if asynchronous:
            self._consumer.commit(asynchronous=True)
        else:
            self._consumer.commit(asynchronous=False)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> RecordConsumer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class DeadLetters:
    """Sends what cannot be processed to the dead-letter topic, with a reason; counts by reason."""

    def __init__(self, producer: RecordProducer, contract: TopicContract, component: str) -> None:
        self._producer = producer
        self._contract = contract
        self.component = component
        self.counts: Counter[str] = Counter()

    def send(
        self,
        reason: str,
        detail: str,
        payload: bytes,
        *,
        source_topic: str = "",
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> None:
        if self.counts[reason] == 0:
            log.warning("dead-lettered (%s): %s; further ones are only counted", reason, detail)
        self.counts[reason] += 1
        record = {
            "reason": reason,
            "detail": detail,
            "source_topic": source_topic,
            "partition": partition,
            "offset": offset,
            "key": key,
            "payload": payload,
            "timestamp": int(time.time() * 1000),
            "component": self.component,
        }
        self._producer.send(self._contract, record)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
