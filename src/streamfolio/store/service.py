"""``streamfolio store``: consume the pipeline's outputs into the history database.

The service reads the updated-statistics, metrics, weights and rebalance-event topics as the
consumer group ``streamfolio-store`` (``read_committed``: records of aborted transactions are never
stored) and writes them through :class:`~streamfolio.store.writer.StoreWriter`.

Delivery: a batch (up to ``batch_size`` messages, or what ``batch_seconds`` brought) is written in
one database transaction, and only after that transaction commits are the Kafka offsets
committed. A crash in between re-reads the batch, and the upserts make the second write a no-op:
at-least-once delivery into idempotent writes, so each message is stored effectively once.

No message stops the store. One that is not stored is counted by reason (one log line per
reason), sent to the dead-letter topic (``topics.dead_letter``: a ``DeadLetter`` with component
``store``, the source topic, partition, offset, key and the original bytes) and acknowledged
with its batch:

* any refusal of :class:`~streamfolio.intake.Intake`, the rules every consumer applies
  (``undecodable``, ``invalid_metrics``, ``future``, ``key_mismatch``, ``unknown_portfolio``,
  ``invalid_weights``...): what the pipeline would not use is not history;
* ``store_refused``: the database cannot hold it: a text longer than its column or with a NUL
  character (refused before the database sees it), or any value the database refuses, found by
  writing the batch again record by record
  (:meth:`~streamfolio.store.writer.StoreWriter.write_batch`); the batch's other records are
  stored.

Dead letters go through a producer of their own, made at the first one; it is flushed before the
offsets are committed, so a dead letter is never lost: if it cannot be delivered, the offsets
stay uncommitted and the messages are read again (:mod:`streamfolio.store.dead_letters`).

The portfolios follow the portfolios topic (:class:`~streamfolio.portfolio_book.PortfolioBook`,
read from its start outside the group at every start, then as it grows): a record of a portfolio
the store does not know yet (or no longer fits) is judged again once the topic is read to its end,
so a portfolio added at run time is stored from its first record. Every definition and removal
read is kept in ``portfolio_definitions`` (upserted: reading the topic again changes nothing).

A new consumer group starts at the oldest message the topics still hold (a history store wants
all of it); ``from_beginning`` also rewinds a group that has committed offsets, to rebuild a
database from scratch (:mod:`streamfolio.store.consumer`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from confluent_kafka import KafkaError, KafkaException
from sqlalchemy.exc import OperationalError

from streamfolio.config import Settings
from streamfolio.intake import Intake, Rejected
from streamfolio.kafka.clients import ConsumedRecord
from streamfolio.kafka.definitions import DefinitionRead
from streamfolio.kafka.outage import broker_watch, close_within
from streamfolio.kafka.topics import Role, contract
from streamfolio.observability.metrics import STORE_DEAD_LETTERS, STORE_READ, STORE_ROWS
from streamfolio.portfolio_book import (
    PERHAPS_NEWLY_DEFINED,
    DefinitionsFollower,
    DefinitionsSource,
    PortfolioBook,
)
from streamfolio.store.consumer import KafkaStoreConsumer, StoreConsumer
from streamfolio.store.dead_letters import (
    COMPONENT,
    DeadLetterOutbox,
    DeadLetterProducer,
    one_line,
)
from streamfolio.store.options import DEFAULT_GROUP, StoreOptions, StoreStats
from streamfolio.store.schema import (
    StoreError,
    open_store,
    safe_url,
)
from streamfolio.store.writer import Batch, Provenance, Refused, StoreWriter

__all__ = [
    "COMPONENT",
    "DEFAULT_GROUP",
    "STORED_ROLES",
    "DeadLetterProducer",
    "StoreConsumer",
    "StoreOptions",
    "StoreService",
    "StoreStats",
    "run_store",
]

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

STORED_ROLES: Final[tuple[Role, ...]] = ("updated_stats", "metrics", "weights", "rebalance_events")
"""The topics the store reads, by role."""

_POLL_S: Final = 0.2
_RETRY_FIRST_S: Final = 0.5
_CLOSE_S: Final = 2.0
_RETRY_MAX_S: Final = 30.0


class StoreService:
    """The consume → write → commit loop. Stops on ``stop``, after ``duration_s``, or Ctrl-C."""

    def __init__(
        self,
        settings: Settings,
        options: StoreOptions,
        *,
        stop: threading.Event | None = None,
        progress: Progress = lambda _: None,
        writer: StoreWriter | None = None,
        consumer: StoreConsumer | None = None,
        producer: DeadLetterProducer | None = None,
        intake: Intake | None = None,
        book: PortfolioBook | None = None,
        definitions: DefinitionsSource | None = None,
    ) -> None:
        self.settings = settings
        # The store sends no notifications: their env:/file: references are not its business.
        self.book = book if book is not None else PortfolioBook(settings, resolve_notify=False)
        self._intake = intake or replace(Intake.from_settings(settings), portfolios=self.book.specs)
        self._definitions = definitions
        self.options = options
        self.stop = stop or threading.Event()
        self.progress = progress
        self.stats = StoreStats()
        self._contracts = [contract(settings, role) for role in STORED_ROLES]
        self._role_of = {c.name: c.role for c in self._contracts}
        self._writer = writer
        self._consumer = consumer
        self._kafka_errors: Counter[str] = Counter()
        self._batch = Batch()
        self._pending = 0  # messages read (stored or skipped) since the last offset commit
        self._read: dict[tuple[str, int | None, int | None], ConsumedRecord] = {}  # the batch's
        self._dead_letters = DeadLetterOutbox(settings.kafka, settings.topics.dead_letter, producer)
        self._deadline: float | None = None  # end of a run given a duration (monotonic)

    def run(self) -> StoreStats:
        """Consume until stopped; returns the final counts. Every batch read is written and
        committed before it returns, unless the database stays unreachable until Ctrl-C."""
        writer = self._writer or StoreWriter(open_store(self.options.database))
        try:
            consumer = self._consumer or KafkaStoreConsumer(
                self.settings.kafka,
                self._contracts,
                group_id=self.options.group_id,
                rewind=self.options.from_beginning,
            )
            if self._definitions is None and self._consumer is None:
                # (A consumer given, as in unit tests, and no definitions: the configured ones.)
                self._definitions = DefinitionsFollower(
                    self.settings,
                    self.book,
                    component="store",
                    group_id=self.options.group_id,
                    listener=self.on_definition,
                )
            if self._definitions is not None:
                self._definitions.catch_up(timeout_s=30.0)
        except BaseException:
            self._dispose(writer)
            raise
        self.progress(
            f"store: {', '.join(c.name for c in self._contracts)} at "
            f"{self.settings.kafka.bootstrap_servers} -> {safe_url(writer.engine.url)} "
            f"(group {self.options.group_id}); Ctrl-C to stop"
        )
        try:
            self._loop(consumer, writer)
        except KeyboardInterrupt:
            self.progress("stopping: storing what was read (Ctrl-C again to leave it to a replay)")
        finally:
            try:
                self._flush(consumer, writer)
            finally:
                # Leaving the group waits for the broker: during an outage, not for long.
                if not close_within(consumer.close, _CLOSE_S):
                    log.warning(
                        "leaving the consumer group took over %g s; not waiting for it", _CLOSE_S
                    )
                if self._definitions is not None:
                    close_within(self._definitions.close, _CLOSE_S)
                self._dispose(writer)
        return self.stats

    def _dispose(self, writer: StoreWriter) -> None:
        if self._writer is None:  # made here, so closed here
            writer.engine.dispose()

    def _loop(self, consumer: StoreConsumer, writer: StoreWriter) -> None:
        options = self.options
        start = time.monotonic()
        deadline = None if options.duration_s is None else start + options.duration_s
        self._deadline = deadline
        next_status = start + options.status_interval_s
        batch_started: float | None = None
        while not self.stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = _POLL_S if deadline is None else max(min(_POLL_S, deadline - now), 0.0)
            item = self._poll(consumer, wait)
            read = self._definitions.poll_some() if self._definitions is not None else 0
            if item is not None:
                self._take(item)
            if (item is not None or read) and batch_started is None:
                batch_started = time.monotonic()
            now = time.monotonic()
            full = len(self._batch) >= options.batch_size
            due = batch_started is not None and now - batch_started >= options.batch_seconds
            if self._pending and (full or due):
                self._flush(consumer, writer)
                batch_started = None
            if now >= next_status:
                self.stats.lag = consumer.lag()
                self.progress(f"store: {self.stats.line()}")
                next_status = now + options.status_interval_s

    def _poll(self, consumer: StoreConsumer, timeout: float) -> ConsumedRecord | None:
        try:
            return consumer.poll(timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.fatal():
                raise
            # e.g. a topic not created yet: librdkafka retries by itself; say so once per kind.
            name = error.name() if isinstance(error, KafkaError) else type(exc).__name__
            if self._kafka_errors[name] == 0:
                log.warning("Kafka reports %s; retrying, further ones are only counted", exc)
            self._kafka_errors[name] += 1
            time.sleep(timeout)
            return None

    def _take(self, item: ConsumedRecord) -> None:
        self.stats.consumed += 1
        STORE_READ.inc()
        self._pending += 1
        role = self._role_of[item.topic]
        try:
            try:
                message = self._intake.read(role, item.value, item.key)
            except Rejected as refused:
                if refused.reason not in PERHAPS_NEWLY_DEFINED or not self._read_definitions():
                    raise
                message = self._intake.read(role, item.value, item.key)
        except Rejected as refused:
            self._skip(item, refused.reason, refused.detail)
            return
        self._read[(item.topic, item.partition, item.offset)] = item
        self._batch.add(message, Provenance(item.topic, item.partition, item.offset))

    def _read_definitions(self) -> int:
        """Read the portfolios topic to its end as of now; how many records were read."""
        return 0 if self._definitions is None else self._definitions.catch_up(timeout_s=10.0)

    def on_definition(
        self, record: ConsumedRecord, read: DefinitionRead, problem: str | None
    ) -> None:
        """Keep a definition or removal the book took in ``portfolio_definitions`` (one it
        refused is the job's to dead-letter, and the book's to count)."""
        if problem is not None or read.error is not None:
            return
        self._pending += 1
        self._batch.add(read, Provenance(record.topic, record.partition, record.offset))

    def _skip(self, item: ConsumedRecord, reason: str, detail: str) -> None:
        """Count a message not stored, log the first of each reason, and dead-letter it."""
        detail = one_line(detail)
        if self.stats.skipped[reason] == 0:
            where = f"{item.topic}[{item.partition}]@{item.offset}"
            log.warning(
                "skipped a message (%s): %s: %s; dead-lettered to %s, further ones are only "
                "counted",
                reason,
                where,
                detail,
                self._dead_letters.topic,
                extra={
                    "topic": item.topic,
                    "partition": item.partition,
                    "offset": item.offset,
                    "reason": reason,
                },
            )
        self.stats.skipped[reason] += 1
        self._dead_letter(item, reason, detail)

    def _dead_letter(self, item: ConsumedRecord, reason: str, detail: str) -> None:
        self._dead_letters.send(item, reason, detail)
        self.stats.dead_lettered += 1
        STORE_DEAD_LETTERS.labels(reason).inc()

    def _refused(self, refused: Refused) -> None:
        source = refused.provenance
        item = self._read.get((source.topic, source.partition, source.offset))
        if item is None:  # not read here (cannot happen in the service): keep what is known
            item = ConsumedRecord(
                source.topic,
                -1 if source.partition is None else source.partition,
                -1 if source.offset is None else source.offset,
                None,
                0,
                b"",
                None,
            )
        self._skip(item, "store_refused", f"{refused.table}: {refused.reason}")

    def _flush(self, consumer: StoreConsumer, writer: StoreWriter) -> None:
        """Write the batch, deliver its dead letters, then commit the offsets of everything read
        (skipped messages too)."""
        if not self._pending:
            return
        if self._batch:
            self._write(writer)
        self._deliver()
        if broker_watch().down:
            # Nothing to commit to: the rows are stored, and re-reading them after a restart
            # (or once the broker is back) upserts the same rows.
            self._pending = 0
            return
        try:
            consumer.commit()
        except KafkaException as exc:
            # The rows are stored; an uncommitted offset only means they are read and upserted
            # again after a restart, which changes nothing.
            log.warning("offset commit failed (%s); the batch will be re-read and re-written", exc)
        self._pending = 0

    def _deliver(self) -> None:
        """Wait until every dead letter sent is delivered: only then may offsets be committed.

        Raises :class:`StoreError` (offsets left uncommitted) when a delivery failed, or when the
        dead-letter topic is still unreachable once the service is told to stop or its duration
        is over.
        """

        def give_up() -> bool:
            out_of_time = self._deadline is not None and time.monotonic() >= self._deadline
            return self.stop.is_set() or out_of_time

        self._dead_letters.deliver(pending=self._pending, give_up=give_up)

    def _write(self, writer: StoreWriter) -> None:
        delay = _RETRY_FIRST_S
        while True:
            try:
                result = writer.write_batch(self._batch)
                break
            except OperationalError as exc:
                # The database is away (a restart, a full disk, a lock held too long): keep the
                # batch and its offsets, and try again until it is back or we are told to stop.
                reason = str(exc.orig or exc).strip().splitlines()[0]
                if self.stop.is_set():
                    raise StoreError(
                        f"database unreachable ({reason}): {self._pending} message(s) read were "
                        "not stored; they are read again at the next start"
                    ) from exc
                log.warning("database write failed (%s); retrying in %.1f s", reason, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        self.stats.written.update(result.written)
        for table, rows in result.written.items():
            STORE_ROWS.labels(table).inc(rows)
        self.stats.transactions += result.transactions
        for refused in result.refused:
            self._refused(refused)
        self._batch.clear()
        self._read.clear()


def run_store(
    settings: Settings,
    options: StoreOptions,
    *,
    stop: threading.Event | None = None,
    progress: Progress = lambda _: None,
) -> StoreStats:
    """Run :class:`StoreService` until stopped; returns its counts."""
    return StoreService(settings, options, stop=stop, progress=progress).run()
