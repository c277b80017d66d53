"""The dashboard's one Kafka consumer: a background thread that feeds :class:`DashboardState`.

It reads every partition of the topics it shows without joining a consumer group (it commits
nothing, so a dashboard never moves a pipeline's offsets or triggers a rebalance of its groups):

* sparse topics (weights, initial statistics, rebalance events: a few records per portfolio and
  decision) from the beginning, since the current weights may be days old;
* dense topics (metrics, updated statistics, dead letters) from the last ``lookback_minutes`` of
  record timestamps, or from the beginning with ``from_beginning``; the state's bounded
  histories cap what that costs in memory.

Each message is judged by :class:`~streamfolio.intake.Intake`, built from the settings: the
rules every component applies, written once. The dashboard only reads, so a message the intake
refuses is never dead-lettered: it is not shown, and is counted under the intake's reason
(:meth:`DashboardState.refused <streamfolio.dashboard.state.DashboardState.refused>`). What the
intake accepts is handed to the state (:meth:`~streamfolio.dashboard.state.DashboardState.accept`),
which applies the dashboard's own rules (the history window, ``out_of_order``, ``too_large``).

Topics that do not exist yet (a dashboard started before the pipeline) are picked up when they
appear. Every ``sample_every_s`` it reads the end offsets of all pipeline topics, prices included,
so the health panel shows message rates without reading the prices themselves. It asks through
a separate admin client in one batched request: on the consumer's own connection each query
would wait behind the pending fetch long-poll (about 0.5 s per partition, seconds per sample).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
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
from streamfolio.dashboard.bounds import Role
from streamfolio.dashboard.state import DashboardState
from streamfolio.errors import UsageError
from streamfolio.intake import Intake, Rejected
from streamfolio.kafka.outage import broker_watch, observed
from streamfolio.kafka.topics import Role as TopicRole
from streamfolio.portfolio_book import (
    PERHAPS_NEWLY_DEFINED,
    DefinitionsFollower,
    DefinitionsSource,
    PortfolioBook,
)

__all__ = ["DENSE_ROLES", "SPARSE_ROLES", "ConsumerOptions", "DashboardConsumer", "start_offset"]

log = logging.getLogger(__name__)

SPARSE_ROLES: Final[tuple[Role, ...]] = ("weights", "initial_stats", "rebalance_events")
DENSE_ROLES: Final[tuple[Role, ...]] = ("metrics", "updated_stats", "dead_letter")
_RATE_ROLES: Final[tuple[TopicRole, ...]] = (
    "prices",
    "metrics",
    "updated_stats",
    "weights",
    "rebalance_events",
    "dead_letter",
)
_BATCH: Final = 500
_LIBRDKAFKA_LOG: Final = logging.getLogger("streamfolio.librdkafka")
_LATEST: Final = OffsetSpec.latest()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """Where to start reading and how often to look after topics and rates."""

    from_beginning: bool = False
    lookback_minutes: float = 60.0
    poll_timeout_s: float = 0.2
    sample_every_s: float = 2.0
    missing_topics_every_s: float = 3.0
    metadata_timeout_s: float = 1.5  # short: a stop waits for it when the broker is down
    request_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.lookback_minutes < 0:
            raise UsageError(f"lookback_minutes must be >= 0, got {self.lookback_minutes}")


def start_offset(role: Role, options: ConsumerOptions, now_ms: int) -> int:
    """Where a role's partitions start: an offset constant, or a timestamp to look up (ms).

    >>> start_offset("weights", ConsumerOptions(), 10_000_000) == OFFSET_BEGINNING
    True
    >>> start_offset("metrics", ConsumerOptions(lookback_minutes=1), 10_000_000)
    9940000
    """
    if options.from_beginning or role in SPARSE_ROLES:
        return OFFSET_BEGINNING
    return max(0, now_ms - int(options.lookback_minutes * 60_000))


class DashboardConsumer:
    """Runs the consumer loop in a daemon thread; :meth:`stop` ends it and closes the client.

    ``intake`` judges each message (default: :meth:`Intake.from_settings
    <streamfolio.intake.Intake.from_settings>` of ``settings``, on the wall clock).
    """

    def __init__(
        self,
        settings: Settings,
        state: DashboardState,
        options: ConsumerOptions | None = None,
        *,
        intake: Intake | None = None,
        book: PortfolioBook | None = None,
        definitions: DefinitionsSource | None = None,
    ) -> None:
        self._settings = settings
        self._state = state
        self._options = options or ConsumerOptions()
        # The portfolios shown follow the portfolios topic (read by ``definitions``, by default a
        # reader of its own made when the loop starts).
        self.book = book if book is not None else PortfolioBook(settings, resolve_notify=False)
        self._definitions = definitions
        self._intake = (
            intake
            if intake is not None
            else replace(Intake.from_settings(settings), portfolios=self.book.specs)
        )
        self._roles: dict[str, Role] = {
            getattr(settings.topics, role): role for role in (*SPARSE_ROLES, *DENSE_ROLES)
        }
        self._assigned: set[str] = set()
        self._partitions: dict[str, list[int]] = {}
        self._admin: AdminClient | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-consumer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end and wait for it (it wakes at least every ``poll_timeout_s``)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -------------------------------------------------------------------------------- loop

    def _config(self) -> dict[str, Any]:
        return observed(
            {
                **self._settings.kafka.client_config("dashboard"),
                # A group id is required by the client, but nothing is ever committed under it.
                "group.id": f"streamfolio-dashboard-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "latest",
            }
        )

    def _run(self) -> None:
        try:
            consumer = Consumer(self._config())
            admin_config: dict[str, Any] = {
                **self._settings.kafka.client_config("dashboard"),
                "logger": _LIBRDKAFKA_LOG,
            }
            self._admin = AdminClient(admin_config)
        except KafkaException as exc:
            log.error("dashboard consumer cannot start: %s", exc)
            self._state.set_status("error", error=str(exc))
            return
        if self._definitions is None:
            try:
                self._definitions = DefinitionsFollower(
                    self._settings,
                    self.book,
                    component="dashboard",
                    group_id=f"streamfolio-dashboard-{uuid.uuid4().hex[:8]}",
                )
                self._definitions.catch_up(timeout_s=10.0)
            except KafkaException as exc:  # no portfolios topic yet: the configured ones
                log.warning("not following the portfolios topic: %s", exc)
        self._state.follow(self.book)
        try:
            self._loop(consumer)
        except Exception as exc:  # the thread must report why it died, not vanish
            log.exception("dashboard consumer stopped")
            self._state.set_status("error", error=f"{type(exc).__name__}: {exc}")
        finally:
            consumer.close()
            if self._definitions is not None:
                self._definitions.close()

    def _loop(self, consumer: Consumer) -> None:
        next_topics = next_sample = 0.0
        opts = self._options
        watch = broker_watch()
        was_down = False
        while not self._stop.is_set():
            now = time.monotonic()
            if watch.down != was_down:
                # The health panel says why nothing moves; what was read stays on show.
                was_down = watch.down
                if was_down:
                    self._state.set_status("waiting", error="Kafka unreachable; retrying")
                else:
                    self._state.set_status("running")
            if now >= next_topics and not self._complete():
                self._assign_missing(consumer)
                next_topics = now + opts.missing_topics_every_s
            if now >= next_sample:
                self._sample_offsets()
                next_sample = now + opts.sample_every_s
            if self._definitions is not None and self._definitions.poll_some(1000):
                self._state.follow(self.book)
            if not self._assigned:
                self._stop.wait(opts.poll_timeout_s)
                continue
            for message in consumer.consume(_BATCH, opts.poll_timeout_s):
                self._handle(message)

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("dashboard consumer: %s", error)
            return
        self.take(message.topic() or "", message.value(), message.key())

    def take(self, topic: str, value: bytes | None, key: bytes | None) -> bool:
        """Judge one message read from ``topic`` and fold it into the state if the intake
        accepts it; False if it is not shown (refused, counted under the intake's reason, or
        ignored by the state), or not from a topic shown here."""
        role = self._roles.get(topic)
        if role is None:
            return False
        try:
            try:
                message = self._intake.read(role, value or b"", key)
            except Rejected as refused:
                if refused.reason not in PERHAPS_NEWLY_DEFINED or not self._read_definitions():
                    raise
                message = self._intake.read(role, value or b"", key)
        except Rejected as refused:
            self._state.refused(role, refused.reason)
            return False
        return self._state.accept(role, message)

    def _read_definitions(self) -> int:
        """Read the portfolios topic to its end as of now (a record of a portfolio not known
        yet may be of one defined a moment ago); how many records were read."""
        if self._definitions is None:
            return 0
        read = self._definitions.catch_up(timeout_s=5.0)
        if read:
            self._state.follow(self.book)
        return read

    def _assign_missing(self, consumer: Consumer) -> None:
        try:
            metadata = consumer.list_topics(timeout=self._options.metadata_timeout_s)
        except KafkaException as exc:
            self._state.set_status("waiting", error=f"broker not reachable: {exc}")
            return
        now_ms = int(time.time() * 1000)
        for name, topic in metadata.topics.items():
            if topic.error is None and (name in self._roles or name in self._rate_topics()):
                self._partitions[name] = sorted(topic.partitions)
        new = [n for n in self._roles if n in self._partitions and n not in self._assigned]
        starts = self._starts(consumer, new, now_ms)
        if starts:
            consumer.incremental_assign(starts)
            self._assigned.update(new)
            log.info("dashboard reads %s", ", ".join(sorted(new)))
        missing = sorted(set(self._roles) - self._assigned)
        if missing:
            self._state.set_status("waiting", error=f"topics not created yet: {', '.join(missing)}")
        else:
            self._state.set_status("running")

    def _starts(
        self, consumer: Consumer, names: Sequence[str], now_ms: int
    ) -> list[TopicPartition]:
        fixed: list[TopicPartition] = []
        by_time: list[TopicPartition] = []
        for name in names:
            start = start_offset(self._roles[name], self._options, now_ms)
            for p in self._partitions[name]:
                target = by_time if start >= 0 else fixed
                target.append(TopicPartition(name, p, start))
        if by_time:
            found = consumer.offsets_for_times(by_time, timeout=self._options.request_timeout_s)
            # -1: no record at or after that time, so start at the end and show what comes next.
            for tp in found:
                offset = tp.offset if tp.offset >= 0 else OFFSET_END
                fixed.append(TopicPartition(tp.topic, tp.partition, offset))
        return fixed

    def _complete(self) -> bool:
        known = set(self._partitions)
        return len(self._assigned) == len(self._roles) and set(self._rate_topics()) <= known

    def _rate_topics(self) -> dict[str, str]:
        return {getattr(self._settings.topics, role): role for role in _RATE_ROLES}

    def _sample_offsets(self) -> None:
        if self._admin is None:
            return
        roles = self._rate_topics()
        specs = {
            TopicPartition(name, p): _LATEST
            for name in roles
            for p in self._partitions.get(name, ())
        }
        if not specs:
            return
        timeout = self._options.metadata_timeout_s
        futures = self._admin.list_offsets(
            specs,
            # The high watermark counts every record written, committed or not: a rate.
            isolation_level=IsolationLevel.READ_UNCOMMITTED,
            request_timeout=timeout,
        )
        totals: dict[str, int] = {}
        failed: set[str] = set()
        for tp, future in futures.items():
            try:
                end = future.result(timeout=timeout).offset
            except (KafkaException, TimeoutError):
                failed.add(roles[tp.topic])
                continue
            totals[roles[tp.topic]] = totals.get(roles[tp.topic], 0) + end
        self._state.observe_end_offsets({r: n for r, n in totals.items() if r not in failed})
