"""The rebalancer's Kafka transactions: what a batch produced and the offsets it read, atomically.

Every batch is one Kafka transaction (:class:`Transaction`, around the transactional producer):
the weights, rebalance events and dead letters it produced, and the consumer offsets
(``send_offsets_to_transaction`` with the group metadata). :class:`OffsetBook` says which offsets
to commit: never past a record still needed (a metrics record waiting for its statistics, or
statistics a later metrics record may name: see :meth:`~.join.StatsJoin.held`). The committed
offset's metadata records how far the instance had read (``processed:<offset>``), so records read
again after a restart are not dead-lettered twice. A Kafka error is retried when retriable, else
the transaction is aborted (:class:`AbortableError`) and the batch read again; a fatal one (fenced
by a newer instance with the same transactional id) stops the service (:class:`RebalancerError`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamfolio.config import Settings
from streamfolio.errors import StreamfolioError
from streamfolio.kafka.clients import producer_config
from streamfolio.kafka.outage import broker_watch, stop_through_callbacks
from streamfolio.kafka.topics import TopicContract
from streamfolio.serde import codec_for

__all__ = [
    "PROCESSED_PREFIX",
    "TRANSACTION_TIMEOUT_MS",
    "AbortableError",
    "OffsetBook",
    "RebalancerError",
    "Transaction",
    "processed_mark",
    "transactional_id",
]

log = logging.getLogger(__name__)

PROCESSED_PREFIX: Final = "processed:"
"""Committed offsets carry ``processed:<next offset read>`` as metadata (see the module doc)."""

TRANSACTION_TIMEOUT_MS: Final = 30_000
"""How long the broker lets a transaction stay open. A crashed instance's open transaction blocks
``read_committed`` readers of the output topics until it is aborted: by the instance restarting
with the same ``--instance`` (at once) or by this timeout."""

_INIT_TIMEOUT_S: Final = 60.0
"""How long the transactional producer may take to start (fencing an older instance)."""
_CALL_TIMEOUT_S: Final = 3.0
"""Each transactional call waits at most this long (then it is retried): a stop request is
noticed between calls, so the service stops within seconds even while the broker is away."""
_RETRY_MAX_S: Final = 2.0

Partition = tuple[str, int]


class RebalancerError(StreamfolioError):
    """The service cannot go on (fenced by another instance, a fatal Kafka error)."""


class AbortableError(Exception):
    """The transaction must be aborted; the service goes on."""


def transactional_id(group_id: str, instance: str) -> str:
    """The producer's ``transactional.id``: stable per instance, so a restarted instance fences
    its crashed predecessor and aborts its open transaction at once.

    >>> transactional_id("streamfolio-rebalancer", "host-a")
    'streamfolio-rebalancer.host-a'
    """
    return f"{group_id}.{instance}"


def processed_mark(metadata: str | None) -> int:
    """How far the group had read, from a committed offset's metadata (-1 if it does not say).

    >>> processed_mark("processed:42"), processed_mark(""), processed_mark("processed:x")
    (42, -1, -1)
    """
    if metadata and metadata.startswith(PROCESSED_PREFIX):
        try:
            return int(metadata[len(PROCESSED_PREFIX) :])
        except ValueError:
            return -1
    return -1


class OffsetBook:
    """Where this instance is in each (topic, partition) it owns: the first and next offsets it
    read, and the offset and ``processed:`` mark last committed."""

    def __init__(self) -> None:
        self.committed: dict[Partition, int] = {}
        self.processed: dict[Partition, int] = {}
        self.next: dict[Partition, int] = {}
        self.first: dict[Partition, int] = {}

    def read(self, topic: str, partition: int, offset: int) -> bool:
        """Note a record read; True if the group had read it before (a replay)."""
        key = (topic, partition)
        self.first.setdefault(key, offset)
        self.next[key] = offset + 1
        return offset < self.processed.get(key, -1)

    def forget_reading(self) -> None:
        """Forget what was read since the last commit (it will be read again)."""
        self.next = {}
        self.first = {}

    def forget_committed(self) -> None:
        self.committed.clear()
        self.processed.clear()

    def load(self, committed: Iterable[TopicPartition]) -> None:
        """Note the group's committed offsets of newly assigned partitions."""
        for tp in committed:
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                self.committed[key] = tp.offset
                self.processed[key] = max(tp.offset, processed_mark(tp.metadata))

    def to_commit(self, held: Iterable[tuple[str, int, int]]) -> list[TopicPartition]:
        """Offsets to commit: what was read, but not past any ``held`` (topic, partition,
        offset), with their ``processed:`` marks; none that changed nothing."""
        safe = dict(self.next)
        for topic, partition, offset in held:
            key = (topic, partition)
            safe[key] = min(safe.get(key, offset), offset)
        offsets = []
        for key, offset in sorted(safe.items()):
            read = max(self.next.get(key, offset), self.processed.get(key, 0))
            if self.committed.get(key) == offset and self.processed.get(key) == read:
                continue
            offsets.append(
                TopicPartition(key[0], key[1], offset, metadata=f"{PROCESSED_PREFIX}{read}")
            )
        return offsets

    def mark_committed(self, offsets: Iterable[TopicPartition]) -> None:
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self.committed[key] = tp.offset
            self.processed[key] = processed_mark(tp.metadata)

    def rewind(self, consumer: Consumer) -> None:
        """Seek every partition read since the last commit back to its committed offset."""
        for key, first in self.first.items():
            target = self.committed.get(key, first)
            try:
                consumer.seek(TopicPartition(key[0], key[1], target))
            except KafkaException as exc:
                log.warning("cannot rewind %s[%d] to %d: %s", key[0], key[1], target, exc)


def producer_settings(settings: Settings, instance: str, txn_id: str) -> dict[str, Any]:
    """The transactional producer's configuration."""
    return producer_config(
        settings.kafka,
        "rebalancer",
        **{
            "client.id": f"{settings.kafka.client_id}-rebalancer-{instance}",
            "transactional.id": txn_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            # In a transaction a message may not outlive it.
            "message.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "linger.ms": 5,
        },
    )


class Transaction:
    """The transactional producer and its open transaction, if any.

    :attr:`producer` is set by :meth:`start`; :attr:`open` says whether a transaction is open,
    :attr:`fatal` whether the producer hit a fatal error (it can do nothing more).
    """

    def __init__(self, txn_id: str) -> None:
        self.transactional_id = txn_id
        self.producer: Producer | None = None
        self.open = False
        self.fatal = False
        self.stopping: Callable[[], bool] = lambda: False
        """Set by the service: once it says True, nothing waits for the broker any more."""

    def start(self, config: Mapping[str, Any]) -> None:
        """Create the producer and fence any older one with the same transactional id."""
        self.producer = Producer(dict(config))
        # In short calls, serving the client's callbacks between them: refused credentials are
        # reported there (the process then stops), not by a call that waits a whole minute.
        deadline = time.monotonic() + _INIT_TIMEOUT_S
        while True:
            try:
                self.producer.init_transactions(_CALL_TIMEOUT_S)
                return
            except KafkaException as exc:
                error = exc.args[0]
                with stop_through_callbacks():
                    self.producer.poll(0)
                given_up = self.stopping() or broker_watch().refused is not None
                if given_up or not error.retriable() or time.monotonic() >= deadline:
                    raise RebalancerError(f"cannot start transactions: {error}") from None

    def begin(self) -> None:
        producer = self.producer
        assert producer is not None
        if not self.open:
            self.retry(producer.begin_transaction)
            self.open = True

    def produce(self, target: TopicContract, record: Mapping[str, Any]) -> None:
        """Encode ``record`` for ``target``; produce it in the transaction (opened if need be)."""
        assert self.producer is not None
        self.begin()
        value = codec_for(target.schema).encode(record)
        key = target.key_of(dict(record))
        # The job places weights among the bars by the record timestamp: stamp the event time.
        stamp = record.get("timestamp")
        extra: dict[str, Any] = {"timestamp": int(stamp)} if isinstance(stamp, int) else {}
        while True:
            try:
                self.producer.produce(target.name, value=value, key=key, **extra)
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:  # the producer is in an error state
                self.classify(exc)

    def commit(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        """Commit the transaction (opened if need be) with ``consumer``'s ``offsets``.

        Raises :class:`AbortableError` when it must be aborted instead.
        """
        producer = self.producer
        assert producer is not None
        self.begin()
        if offsets:
            metadata = consumer.consumer_group_metadata()
            self.retry(
                lambda: producer.send_offsets_to_transaction(offsets, metadata, _CALL_TIMEOUT_S)
            )
        self.retry(lambda: producer.commit_transaction(_CALL_TIMEOUT_S))
        self.open = False

    def abort(self) -> bool:
        """Abort the open transaction, if any (and the producer can); True if one was."""
        producer = self.producer
        assert producer is not None
        if not self.open or self.fatal:
            return False
        if self.stopping() and broker_watch().down:
            # The broker aborts it when the transaction times out, or at once when this
            # instance starts again with the same transactional id (it fences this one).
            log.warning("Kafka unreachable: the open transaction is left for the broker to abort")
            self.open = False
            return True
        try:
            self.retry(lambda: producer.abort_transaction(_CALL_TIMEOUT_S))
        except AbortableError as exc:
            log.warning("abort failed: %s", exc)
        self.open = False
        return True

    def retry(self, call: Callable[[], object], attempts: int = 10) -> None:
        """Run a transactional call, retrying what is retriable (see :meth:`classify`).

        While the broker is unreachable it retries until it is back (the outage is logged by
        the broker watch), unless the service is stopping: then the transaction is given up.
        """
        attempt = 0
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                attempt += 1
                waiting = broker_watch().down
                if self.stopping() or (attempt >= attempts and not waiting):
                    raise AbortableError(str(exc.args[0])) from None
                self.classify(exc)
                time.sleep(min(0.2 * attempt, _RETRY_MAX_S))

    def classify(self, exc: KafkaException) -> None:
        """Return if ``exc`` is worth retrying; raise :class:`RebalancerError` if it is fatal
        (fenced by a newer instance with our transactional id), else :class:`AbortableError`."""
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError):
            raise AbortableError(str(exc)) from None
        if error.fatal():
            self.fatal = True
            raise RebalancerError(fatal_message(error, self.transactional_id)) from None
        if error.txn_requires_abort() or not error.retriable():
            raise AbortableError(str(error)) from None


def fatal_message(error: KafkaError, txn_id: str) -> str:
    if error.code() == KafkaError._FENCED or "fenced" in str(error).lower():
        return (
            f"another rebalancer uses transactional id {txn_id!r} (same group and --instance); "
            f"this one is fenced off and stops: give each instance its own --instance ({error})"
        )
    return f"fatal Kafka error: {error}"
