"""The rebalancer service: metrics and statistics in, decisions out, exactly once.

:class:`RebalancerService` wires the parts together and runs the loop. A consumer in group
``rebalancer.group_id`` reads the metrics and updated-statistics topics with
``partition.assignment.strategy=range``: both are keyed by portfolio id with the same partition
count, so a portfolio's metrics and statistics reach the same instance, and several instances
share the partitions. Every record read is judged by the :class:`~.decider.Decider` (through
:class:`~streamfolio.intake.Intake`, then the rebalancer's own rules); a refused record is
dead-lettered with its reason: ``undecodable``, ``invalid_metrics``, ``invalid_stats``,
``future``, ``key_mismatch`` (a null key too), ``unknown_portfolio``, ``stats_missing`` (from the
join) or ``decision_failed``. A metrics record waits for the statistics it names
(:mod:`.join`); then the decider decides against the memory rebuilt from the output topics
(:mod:`.memory`, kept current by :mod:`.follower`). What each record leads to is produced and
staged by a :class:`~.batch.Batch`, and every batch is one Kafka transaction
(:mod:`.transactions`). Notifications are sent after the transaction commits, never for aborted
work.

The portfolios follow their topic (:class:`~streamfolio.portfolio_book.PortfolioBook`), read to
its end before a step's records are handled: every definition in force for them is known then.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streamfolio.config import Settings
from streamfolio.kafka.outage import broker_watch, close_within, stop_through_callbacks
from streamfolio.kafka.topics import contract
from streamfolio.messages import RebalanceEvent
from streamfolio.observability.metrics import REBALANCER_ABORTS, REBALANCER_TRANSACTIONS
from streamfolio.portfolio_book import DefinitionsFollower, PortfolioBook
from streamfolio.rebalancer.batch import COMPONENT, Batch, RebalancerStats, Targets
from streamfolio.rebalancer.decider import Decider, Outcome, OutcomeKind
from streamfolio.rebalancer.follower import TopicFollower
from streamfolio.rebalancer.group import describe, group_consumer_config, ignored, unread
from streamfolio.rebalancer.join import Source
from streamfolio.rebalancer.memory import Memory
from streamfolio.rebalancer.notify import Notifier
from streamfolio.rebalancer.transactions import (
    AbortableError,
    OffsetBook,
    RebalancerError,
    Transaction,
    producer_settings,
    transactional_id,
)

__all__ = [
    "COMPONENT",
    "Decider",
    "Outcome",
    "OutcomeKind",
    "RebalancerError",
    "RebalancerService",
    "RebalancerStats",
    "transactional_id",
]

log = logging.getLogger(__name__)

_AbortableError = AbortableError  # the name tests/integration/test_rebalancer.py imports

_CLOSE_S: Final = 1.5
"""On the way out, each consumer's close (leaving the group, which waits for the broker) and
the queued notifications get at most this long: a stop takes seconds, outage or not."""

Progress = Callable[[str], None]


class RebalancerService:
    """The ``streamfolio rebalancer`` service (see the module doc).

    Parameters
    ----------
    settings
        The configuration: Kafka, topic names, portfolios and their policies.
    group_id
        Consumer group (default ``rebalancer.group_id``). Instances of one group share the
        portfolios; one group per set of topics.
    instance
        This instance's name within the group (default: the host name). It makes the producer's
        ``transactional.id``; give each instance of a group its own, and a restarted instance
        the one it had.
    from_beginning
        Where a group without committed offsets starts: the oldest records (True, the default)
        or new ones. From the oldest, a rebalancer started after the job decides on every
        metrics record the job wrote, as the replay does, however late it joined; what was
        already decided is known from the events topic and skipped.
    notifier
        Where notifications go (default: a :class:`~.notify.Notifier` using apprise).
    clock
        The wall clock in epoch milliseconds (default: the system's), against which records
        stamped in the future are refused (``validation.max_future_skew_ms``).
    book
        The portfolios (default: the configured ones, then the portfolios topic's).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str | None = None,
        instance: str | None = None,
        from_beginning: bool = True,
        notifier: Notifier | None = None,
        progress: Progress | None = None,
        status_interval_s: float = 30.0,
        commit_interval_s: float = 0.5,
        clock: Callable[[], int] | None = None,
        book: PortfolioBook | None = None,
    ) -> None:
        self.settings = settings
        self.book = book if book is not None else PortfolioBook(settings)
        self.group_id = group_id or settings.rebalancer.group_id
        self.instance = instance or socket.gethostname()
        self.transactional_id = transactional_id(self.group_id, self.instance)
        self.from_beginning = from_beginning
        self.decider = Decider(settings, clock=clock, book=self.book)
        self.memory = Memory(self.book.tickers)
        self.notifier = notifier or Notifier()
        self.stats = RebalancerStats()
        self._progress = progress or log.info
        self._status_interval_s = status_interval_s
        self._commit_interval_s = commit_interval_s
        self._metrics = contract(settings, "metrics")
        self._updated = contract(settings, "updated_stats")
        self._weights = contract(settings, "weights")
        self._events = contract(settings, "rebalance_events")
        self._txn = Transaction(self.transactional_id)
        self._consumer: Consumer | None = None
        self._follower: TopicFollower | None = None
        self._definitions: DefinitionsFollower | None = None
        self._offsets = OffsetBook()
        self._batch = Batch(
            self.decider,
            self.memory,
            self._txn,
            Targets(self._weights, self._events, contract(settings, "dead_letter")),
            self.stats,
            metrics_topic=self._metrics.name,
            stats_unread=self._stats_unread,
        )
        self._assignment: list[tuple[str, int]] = []
        self._just_assigned = False
        self._abort_before_next_step = False
        self._last_commit = time.monotonic()

    @property
    def assigned_partitions(self) -> tuple[tuple[str, int], ...]:
        """The (topic, partition) pairs this instance owns now."""
        return tuple(self._assignment)

    @property
    def _staged_events(self) -> list[RebalanceEvent]:
        """Decision events of the open transaction (tests/integration/test_rebalancer.py)."""
        return self._batch.events

    def _reset_buffers(self) -> None:
        self._batch.join.reset()
        self._offsets.forget_reading()

    def _consumer_config(self) -> dict[str, Any]:
        return group_consumer_config(
            self.settings,
            group_id=self.group_id,
            instance=self.instance,
            from_beginning=self.from_beginning,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def run(
        self, stop_event: threading.Event, *, duration_s: float | None = None
    ) -> RebalancerStats:
        """Run until ``stop_event`` is set (or ``duration_s`` passed); returns what was done.

        On the way out the open transaction is committed (or aborted if that fails), the
        consumer leaves the group, and queued notifications get a few seconds to go out.
        """
        started = time.monotonic()
        self._txn.stopping = stop_event.is_set
        self._txn.start(producer_settings(self.settings, self.instance, self.transactional_id))
        self._definitions = DefinitionsFollower(
            self.settings, self.book, component=COMPONENT, group_id=f"{self.group_id}.memory"
        )
        self._definitions.catch_up(timeout_s=30.0)
        self._follower = TopicFollower(
            self.settings,
            self.memory,
            group_id=self.group_id,
            intake=self.decider.intake,
            refresh=self._definitions.catch_up,
        )
        self._batch.follower = self._follower
        try:
            self._follower.catch_up(timeout_s=60.0)
            self._progress(
                f"rebalancer {self.instance}: memory rebuilt from {self._follower.read} record(s) "
                f"of {self._weights.name}, {self._events.name} and "
                f"{self.settings.topics.initial_stats}"
                + ignored(self._follower.skipped)
                + f"; {len(self.decider.portfolio_ids)} portfolio(s): "
                + ", ".join(self.decider.portfolio_ids)
            )
            self._consumer = Consumer(self._consumer_config())
            self._consumer.subscribe(
                [self._metrics.name, self._updated.name],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._progress(
                f"rebalancer {self.instance}: group {self.group_id}, reading "
                f"{self._metrics.name} and {self._updated.name} "
                f"(transactional id {self.transactional_id}); Ctrl-C to stop"
            )
            next_status = time.monotonic() + self._status_interval_s
            while not stop_event.is_set():
                if duration_s is not None and time.monotonic() - started >= duration_s:
                    break
                self._step()
                if time.monotonic() >= next_status:
                    self._progress(f"rebalancer {self.instance}: {self._status()}")
                    next_status = time.monotonic() + self._status_interval_s
        finally:
            self._shutdown()
        return self.stats

    def _status(self) -> str:
        waiting = self._batch.join.waiting()
        return self.stats.line() + (f"; {waiting} metrics wait for statistics" if waiting else "")

    def _shutdown(self) -> None:
        try:
            if self._consumer is not None:
                if broker_watch().down:
                    log.warning(
                        "Kafka unreachable: stopping without committing; what was read since "
                        "the last commit is read again at the next start"
                    )
                    self._abort(rewind=False)
                elif not self._txn.fatal:
                    try:
                        self._commit()
                    except (AbortableError, RebalancerError) as exc:
                        log.warning("could not commit on the way out (%s); aborting", exc)
                        self._abort(rewind=False)
                close_within(self._consumer.close, _CLOSE_S)  # the others take over at once
        finally:
            if self._follower is not None:
                close_within(self._follower.close, _CLOSE_S)
            if self._definitions is not None:
                close_within(self._definitions.close, _CLOSE_S)
            self.notifier.close(timeout=_CLOSE_S)
            self._progress(f"rebalancer {self.instance} stopped: {self.stats.line()}")

    # -- group membership ---------------------------------------------------------------------
    #
    # The callbacks run inside consumer.consume() and only record what changed: the work an
    # assignment needs (reading the memory topics to their end, fetching the committed
    # offsets) runs in the loop right after consume() returns, before any record is handled, so
    # the group's rebalance is not held up by it. No transaction is ever open while consume()
    # runs (every step commits what it produced), so a revocation has nothing to finish: the
    # buffers are dropped and whoever gets the partitions reads again from the committed offsets.

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment = [(tp.topic, tp.partition) for tp in partitions]
        self._just_assigned = True
        self._progress(f"rebalancer {self.instance}: assigned {describe(partitions)}")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget_partitions()
        if partitions:
            self._progress(f"rebalancer {self.instance}: revoked {describe(partitions)}")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("rebalancer %s lost its partitions (session expired)", self.instance)
        self._forget_partitions()

    def _forget_partitions(self) -> None:
        if self._txn.open:  # cannot happen (see above); never commit for lost partitions
            log.error("partitions revoked with a transaction open; it will be aborted")
            self._abort_before_next_step = True
        self._reset_buffers()
        self._assignment = []
        self._offsets.forget_committed()

    def _after_assign(self) -> None:
        """Prepare newly assigned partitions before their first records are handled."""
        assert self._consumer is not None
        self._just_assigned = False
        # Another instance may have committed decisions for these portfolios a moment ago.
        self._batch.refresh_memory()
        if not self._assignment:
            return
        wanted = [TopicPartition(t, p) for t, p in self._assignment]
        self._offsets.load(self._consumer.committed(wanted, timeout=30.0))

    # -- the loop -----------------------------------------------------------------------------

    def _step(self) -> None:
        assert self._consumer is not None and self._follower is not None
        assert self._txn.producer is not None
        with stop_through_callbacks():
            messages = self._consumer.consume(num_messages=500, timeout=0.2)
        if self._abort_before_next_step:
            self._abort_before_next_step = False
            self._abort(rewind=False)
        if self._just_assigned:
            self._after_assign()
        try:
            if messages:
                self._read_definitions()  # those in force for what was just read
            elif self._definitions is not None:
                self._definitions.poll_some()
            self._follower.drain()
            for message in messages:
                self._on_message(message)
            self._batch.process_ready()
            self._txn.producer.poll(0)
            # Whatever was produced is committed before the next consume() (see above);
            # offsets alone may wait a little, to keep transactions few when nothing happens.
            if self._txn.open or (time.monotonic() - self._last_commit >= self._commit_interval_s):
                self._commit()
        except AbortableError as exc:
            log.warning("transaction aborted (%s); reading again from the last commit", exc)
            self._abort(rewind=True)

    def _on_message(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise RebalancerError(f"consumer: {error}")
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", error)
            return
        topic = message.topic() or ""
        partition = message.partition() or 0
        offset = message.offset() or 0
        replayed = self._offsets.read(topic, partition, offset)
        source = Source(topic, partition, offset, message.key(), message.value() or b"", replayed)
        self._batch.read(source)

    def _read_definitions(self) -> None:
        """Read the portfolios topic to its end now, else abort: decide nothing without it."""
        if self._definitions is not None:
            self._definitions.catch_up(timeout_s=10.0)
            if not self._definitions.caught_up:
                raise AbortableError("the portfolios topic could not be read to its end")

    def _stats_unread(self, source: Source) -> bool:
        """Whether the statistics partition co-partitioned with ``source`` has unread records."""
        tp = TopicPartition(self._updated.name, source.partition)
        return self._consumer is not None and unread(self._consumer, tp)

    # -- committing ---------------------------------------------------------------------------

    def _safe_offsets(self) -> list[TopicPartition]:
        """Offsets to commit: what was read, but not past any record still needed."""
        return self._offsets.to_commit(self._batch.join.held())

    def _commit(self) -> None:
        """Commit the open transaction with the consumer's safe offsets, then make known what
        it did (counts, progress lines, notifications).

        Raises :class:`~.transactions.AbortableError` when it must be aborted instead.
        """
        assert self._txn.producer is not None and self._consumer is not None
        self._last_commit = time.monotonic()
        offsets = self._safe_offsets()
        if not self._txn.open and not offsets:
            self._batch.merge()  # counts of records that changed nothing
            return
        self._txn.commit(offsets, self._consumer)
        self._offsets.mark_committed(offsets)
        self.stats.transactions += 1
        REBALANCER_TRANSACTIONS.inc()
        self.memory.commit()
        self._batch.merge()
        self._batch.announce(self._progress, self.notifier)

    def _abort(self, *, rewind: bool) -> None:
        """Abort the open transaction, forget what it decided and (``rewind``) read again from
        the last committed offsets."""
        if self._txn.abort():
            self.stats.aborted += 1
            REBALANCER_ABORTS.inc()
        self.memory.rollback()
        self._batch.discard()
        if rewind and self._consumer is not None:
            self._offsets.rewind(self._consumer)
        self._reset_buffers()
