"""The store's Kafka consumer: a group member that can rewind on its first assignment.

:class:`StoreConsumer` is what :class:`~streamfolio.store.service.StoreService` needs of a
consumer (a fake one in unit tests); :class:`KafkaStoreConsumer` is the real one. A new consumer
group starts at the oldest message the topics still hold (a history store wants all of it);
``rewind`` also rewinds a group that has committed offsets, once per partition, to rebuild a
database from scratch. Its :meth:`~KafkaStoreConsumer.lag` feeds the service's status lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from streamfolio.config import KafkaSettings
from streamfolio.kafka.clients import ConsumedRecord, RecordConsumer
from streamfolio.kafka.topics import TopicContract

__all__ = ["KafkaStoreConsumer", "StoreConsumer"]


class StoreConsumer(Protocol):
    """What the service needs of a Kafka consumer (a fake one in unit tests)."""

    def poll(self, timeout: float = 1.0) -> ConsumedRecord | None: ...

    def commit(self) -> None: ...

    def lag(self) -> int | None: ...

    def close(self) -> None: ...


class KafkaStoreConsumer(RecordConsumer):
    """A group consumer that can rewind on its first assignment and report its lag."""

    def __init__(
        self,
        kafka: KafkaSettings,
        contracts: Sequence[TopicContract],
        *,
        group_id: str,
        rewind: bool,
    ) -> None:
        # A new group starts at the oldest message: the store wants all the history there is.
        # The service judges each record's bytes through its Intake: no decoding here too.
        super().__init__(
            kafka,
            contracts,
            component="store",
            group_id=group_id,
            from_beginning=True,
            decode=False,
        )
        self._rewound: set[tuple[str, int]] = set()
        if rewind:
            # Subscribing again before the first poll replaces the subscription made above.
            self._consumer.subscribe([c.name for c in contracts], on_assign=self._rewind)

    def commit(self, *, asynchronous: bool = True) -> None:
        """Queue the commit: a synchronous one waits for the broker without a bound, so a
        broker killed at that moment would hold the store, Ctrl-C included, until it is back
        (seen in tests/integration/test_outage.py). A commit that fails only means the rows
        since the last one are read and upserted again after a restart."""
        super().commit(asynchronous=asynchronous)

    def _rewind(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Each partition once: a later rebalance must resume, not start over again.
        for tp in partitions:
            if (tp.topic, tp.partition) not in self._rewound:
                tp.offset = OFFSET_BEGINNING
                self._rewound.add((tp.topic, tp.partition))
        consumer.assign(partitions)

    def lag(self) -> int | None:
        """Messages between this consumer's positions and the ends of its partitions, or None
        while some partition's end is not known yet.

        Ends are the high watermarks librdkafka caches from each fetch response: asking the
        broker instead queues behind the consumer's own long-polling fetch (half a second per
        partition), which would stall consumption at every status line.
        """
        try:
            assignment = self._consumer.assignment()
            if not assignment:
                return None
            positions = self._consumer.position(assignment)
            unknown = [tp for tp in positions if tp.offset < 0]
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in (self._consumer.committed(unknown, timeout=2.0) if unknown else [])
            }
            total = 0
            for tp in positions:
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    return None
                at = tp.offset if tp.offset >= 0 else committed.get((tp.topic, tp.partition), -1)
                total += max(high - (at if at >= 0 else max(low, 0)), 0)
            return total
        except KafkaException:
            return None
