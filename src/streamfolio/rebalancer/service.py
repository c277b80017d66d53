"""The rebalancer service: metrics and statistics in, decisions out, exactly once.

:class:`Decider` is the logic, without Kafka: given a portfolio's metrics record, the statistics
it was computed from and the portfolio's :class:`~streamfolio.rebalancer.memory.PortfolioMemory`,
it asks the core :class:`~streamfolio.core.policy.RebalancePolicy` and says what to publish.

:class:`RebalancerService` runs it against Kafka:

* A consumer in group ``rebalancer.group_id`` reads the metrics and updated-statistics topics
  with ``partition.assignment.strategy=range``. Both are keyed by portfolio id with the same
  partition count, so a portfolio's metrics and statistics reach the same instance; several
  instances share the partitions.
* Every record read is judged by :class:`~streamfolio.intake.Intake` (the same rules as every
  other reader) and then by the rebalancer's own (a metrics record must name its statistics;
  statistics are put in the portfolio's ticker order and must be of its bar size). A refused
  record is dead-lettered with its reason: ``undecodable``, ``invalid_metrics``,
  ``invalid_stats``, ``future``, ``key_mismatch`` (a null key too) or ``unknown_portfolio``.
* A metrics record waits until the statistics it names (``statsTimestamp``) have arrived: the
  two topics are not ordered with each other. A seed's statistics come from the
  initial-statistics topic instead. Once a later metrics record of the portfolio names later
  statistics that have arrived, the named ones never will (a portfolio's statistics are ordered
  in their partition): the metrics record is dead-lettered as ``stats_missing``. The wait is
  bounded: a statsTimestamp further ahead than ``validation.max_future_skew_ms`` is refused as
  ``future``, and once more than :data:`MAX_PENDING_METRICS` metrics records of a portfolio wait
  (and the statistics partition has been read to its end) the oldest is dead-lettered as
  ``stats_missing``, so the committable offset moves on.
* Decisions use event time only (``now`` is the metrics timestamp) and the memory rebuilt from
  the weights, rebalance-events and initial-statistics topics (:mod:`.memory`), so a restarted or
  second instance decides the same way.
* Every batch is one Kafka transaction: the weights, rebalance events and dead letters it
  produced, and the consumer offsets (``send_offsets_to_transaction`` with the group metadata).
  Offsets never pass a record still needed: a metrics record waiting for its statistics, or
  statistics a later metrics record may name. The committed offset's metadata records how far
  the instance had read (``processed:<offset>``), so records read again after a restart are not
  dead-lettered twice; metrics read again are not decided twice because decisions are only made
  on metrics newer than the portfolio's last decision event. Metrics older than the weights in
  force are ``stale``: weights stamped before those would be ignored by the job.
* Notifications are sent after the transaction commits, never for aborted work.
"""

from __future__ import annotations

import enum
import logging
import math
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import numpy as np
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streamfolio.config import PortfolioSettings, Settings
from streamfolio.core.metrics import portfolio_performance
from streamfolio.core.policy import Rebalance, RebalancePolicy
from streamfolio.core.portfolio import check_weights
from streamfolio.errors import SchemaError, StreamfolioError
from streamfolio.intake import Intake, Rejected
from streamfolio.kafka.clients import producer_config
from streamfolio.kafka.topics import TopicContract, contract
from streamfolio.messages import PortfolioMetrics, PortfolioStats, RebalanceEvent, Weights
from streamfolio.portfolios import policy_settings
from streamfolio.rebalancer.memory import (
    DECISION_HOLD,
    DECISION_REARM,
    DECISION_REBALANCE,
    SOURCE,
    Memory,
    MemoryTopicsError,
    PortfolioMemory,
    TopicFollower,
    align_stats,
    same_weights,
    state_after,
)
from streamfolio.rebalancer.notify import Notification, Notifier, notification_for
from streamfolio.serde import codec_for

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

COMPONENT: Final = "rebalancer"
"""``DeadLetter.component`` of what this service dead-letters."""

PROCESSED_PREFIX: Final = "processed:"
"""Committed offsets carry ``processed:<next offset read>`` as metadata (see the module doc)."""

MAX_STATS_AHEAD: Final = 4096
"""Statistics records kept per portfolio that no metrics record has reached yet. Beyond this the
oldest are dropped (a metrics record naming one is then dead-lettered as ``stats_missing``):
a portfolio whose job emits statistics but no metrics (no weights yet) must not grow without end."""

MAX_PENDING_METRICS: Final = 4096
"""Metrics records kept per portfolio waiting for the statistics they name. Beyond this, once the
co-partitioned statistics partition has been read to its end (nothing more is coming for now),
the oldest is dead-lettered as ``stats_missing`` and the committable offset moves past it:
statistics that never come must not pin the offsets nor grow the queue without end. While
statistics are still unread (a catch-up reads the two topics at different paces) the queue may
go past the bound, never past what the log holds."""

TRANSACTION_TIMEOUT_MS: Final = 30_000
"""How long the broker lets a transaction stay open. A crashed instance's open transaction blocks
``read_committed`` readers of the output topics until it is aborted: by the instance restarting
with the same ``--instance`` (at once) or by this timeout."""

SESSION_TIMEOUT_MS: Final = 10_000
"""How soon the group notices an instance that died (kill -9) and gives its partitions away."""

OutcomeKind = Literal["rebalance", "hold", "rearm", "unchanged", "stale", "already_decided"]
Progress = Callable[[str], None]


class RebalancerError(StreamfolioError):
    """The service cannot go on (fenced by another instance, a fatal Kafka error)."""


def transactional_id(group_id: str, instance: str) -> str:
    """The producer's ``transactional.id``: stable per instance, so a restarted instance fences
    its crashed predecessor and aborts its open transaction at once.

    >>> transactional_id("streamfolio-rebalancer", "host-a")
    'streamfolio-rebalancer.host-a'
    """
    return f"{group_id}.{instance}"


# ------------------------------------------------------------------------------------ decider


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a metrics record led to, and the portfolio's memory after it.

    ``kind``: ``rebalance`` (weights and an event), ``hold`` (an event: an attempt found nothing
    worth doing), ``rearm`` (an event: the policy re-armed), ``unchanged`` (nothing to publish),
    ``stale`` (computed with weights the portfolio no longer has) or ``already_decided``
    (not newer than the portfolio's last decision).
    """

    kind: OutcomeKind
    memory: PortfolioMemory
    weights: Weights | None = None
    event: RebalanceEvent | None = None
    notification: Notification | None = None
    detail: str = ""


class Decider:
    """Turns a metrics record, its statistics and the portfolio's memory into an :class:`Outcome`.

    Pure apart from logging: no clock, no Kafka, no randomness, so the same inputs always give
    the same outcome, whichever instance computes it. Only reading a record
    (:meth:`metrics_from`, :meth:`stats_from`) looks at the wall clock, through ``intake``
    (default: :meth:`Intake.from_settings <streamfolio.intake.Intake.from_settings>` with
    ``clock``), to refuse what is stamped in the future.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        intake: Intake | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._portfolios: dict[str, PortfolioSettings] = {p.id: p for p in settings.portfolios}
        if intake is None:
            intake = (
                Intake.from_settings(settings)
                if clock is None
                else Intake.from_settings(settings, clock=clock)
            )
        if intake.portfolios is None or set(intake.portfolios) != set(self._portfolios):
            raise ValueError("the intake must judge exactly the configured portfolios")
        self.intake = intake
        self._policies = {
            p.id: RebalancePolicy(policy_settings(p, settings.exchange))
            for p in settings.portfolios
        }
        self._periods = {
            p.id: p.periods_per_year_value(settings.exchange) for p in settings.portfolios
        }

    @property
    def portfolio_ids(self) -> tuple[str, ...]:
        return tuple(self._portfolios)

    def tickers(self, portfolio_id: str) -> tuple[str, ...]:
        return self._portfolios[portfolio_id].tickers

    def metrics_from(self, value: bytes, key: bytes | None) -> PortfolioMetrics:
        """A metrics record read from the topic (its bytes and Kafka key), judged by the
        intake and the rebalancer's own rule (it names its statistics).

        Raises :class:`~streamfolio.intake.Rejected` with the dead letter's reason.
        """
        metrics = self.intake.metrics(value, key)
        if metrics.stats_timestamp <= 0:
            raise Rejected(
                "invalid_metrics",
                f"{metrics.portfolio_id}: no statsTimestamp, so its statistics cannot be found",
            )
        return metrics

    def stats_from(self, value: bytes, key: bytes | None) -> PortfolioStats:
        """Updated statistics read from the topic, judged by the intake, in their portfolio's
        ticker order and of its bar size.

        Raises :class:`~streamfolio.intake.Rejected` with the dead letter's reason.
        """
        stats = self.intake.updated_stats(value, key)
        portfolio = self._portfolios[stats.portfolio_id]  # the intake knows no other
        try:
            aligned = align_stats(stats, portfolio.tickers)
        except SchemaError as exc:
            raise Rejected("invalid_stats", f"{stats.portfolio_id}: {exc}") from None
        if stats.bar_seconds is not None and stats.bar_seconds != portfolio.bar_seconds:
            raise Rejected(
                "invalid_stats",
                f"{stats.portfolio_id}: statistics of {stats.bar_seconds} s bars, but the "
                f"portfolio has {portfolio.bar_seconds} s bars",
            )
        return aligned

    def _bounds(self, portfolio_id: str) -> tuple[tuple[float, float], ...] | None:
        spec = None if self.intake.portfolios is None else self.intake.portfolios[portfolio_id]
        return None if spec is None else spec.bounds

    @staticmethod
    def already_decided(metrics: PortfolioMetrics, memory: PortfolioMemory) -> bool:
        """Whether ``metrics`` is not newer than the portfolio's last decision: it was decided
        (or is a replay of a record that was), and deciding again could only repeat it."""
        return memory.last_event_ms is not None and metrics.timestamp <= memory.last_event_ms

    def decide(
        self, metrics: PortfolioMetrics, stats: PortfolioStats, memory: PortfolioMemory
    ) -> Outcome:
        """The outcome of ``metrics`` (with the statistics it names) for a portfolio that
        remembers ``memory``. ``stats`` must be in the portfolio's ticker order."""
        pid = metrics.portfolio_id
        portfolio = self._portfolios[pid]
        if self.already_decided(metrics, memory):
            return Outcome("already_decided", memory, detail=f"decided at {memory.last_event_ms}")
        if memory.weights is not None and not same_weights(metrics.weights, memory.weights):
            return Outcome(
                "stale",
                memory,
                detail="computed with weights the portfolio no longer has (the job has not "
                "applied the latest weights yet)",
            )
        if memory.weights_timestamp is not None and metrics.timestamp < memory.weights_timestamp:
            # Weights stamped before those in force would be ignored by the job (stale there),
            # while the memory would take them as in force: decide nothing.
            return Outcome(
                "stale",
                memory,
                detail=f"stamped {metrics.timestamp}, before the weights in force "
                f"(stamped {memory.weights_timestamp})",
            )
        if stats.timestamp != metrics.stats_timestamp or stats.tickers != portfolio.tickers:
            raise ValueError("decide() needs the statistics the metrics name, in ticker order")
        tickers = portfolio.tickers
        mean, covariance = stats.mean_vector(), stats.covariance_matrix()
        current = np.array([metrics.weights[t] for t in tickers], dtype=np.float64)
        decision, state = self._policies[pid].decide(
            mean=mean,
            covariance=covariance,
            count=stats.count,
            weights=current,
            now_ms=metrics.timestamp,
            state=memory.policy,
        )
        old = {t: float(metrics.weights[t]) for t in tickers}
        event_id = RebalanceEvent.make_event_id(pid, metrics.timestamp)
        if isinstance(decision, Rebalance):
            new = {t: float(w) for t, w in zip(tickers, decision.weights.tolist(), strict=True)}
            problem = check_weights(tickers, new, self._bounds(pid))
            if problem is not None:  # the optimiser's contract; never publish what the job rejects
                raise ValueError(f"the policy proposed weights the job would reject: {problem}")
            event = RebalanceEvent(
                pid,
                metrics.timestamp,
                decision.reason,
                DECISION_REBALANCE,
                old,
                new,
                decision.sharpe_before,
                decision.sharpe_after,
                decision.expected_return_after,
                decision.risk_after,
                decision.turnover,
                decision.optimizer_status,
                event_id,
            )
            weights = Weights(pid, metrics.timestamp, new, reason=decision.reason, source=SOURCE)
            after = replace(
                memory,
                policy=state,
                last_event_ms=metrics.timestamp,
                last_decision=DECISION_REBALANCE,
                weights=new,
                weights_timestamp=metrics.timestamp,
                weights_source=SOURCE,
                weights_read_back=False,
            )
            self._check_replayable(event, memory, state)
            return Outcome(
                "rebalance",
                after,
                weights=weights,
                event=event,
                notification=notification_for(event, portfolio),
                detail=decision.reason,
            )

        attempted = state.last_attempt_ms != memory.policy.last_attempt_ms
        if attempted or decision.notify:
            kind: OutcomeKind = "hold"
            reason = decision.reason
        elif state != memory.policy:
            kind = "rearm"
            reason = f"re-armed: {decision.reason}"
        else:
            return Outcome("unchanged", memory, detail=decision.reason)
        performance = portfolio_performance(
            current,
            mean,
            covariance,
            periods_per_year=self._periods[pid],
            risk_free_rate=portfolio.risk_free_rate,
        )
        event = RebalanceEvent(
            pid,
            metrics.timestamp,
            reason,
            DECISION_HOLD if kind == "hold" else DECISION_REARM,
            old,
            old,
            decision.sharpe,
            decision.sharpe,
            performance.expected_return if math.isfinite(performance.expected_return) else 0.0,
            performance.risk if math.isfinite(performance.risk) else 0.0,
            0.0,
            "",
            event_id,
        )
        self._check_replayable(event, memory, state)
        # One message per episode: a portfolio stuck below its threshold is re-examined every
        # cool-down, and the owner hears of it when it starts, not every few minutes.
        tell = kind == "hold" and decision.notify and memory.last_decision != DECISION_HOLD
        return Outcome(
            kind,
            replace(
                memory, policy=state, last_event_ms=metrics.timestamp, last_decision=event.decision
            ),
            event=event,
            notification=notification_for(event, portfolio) if tell else None,
            detail=decision.reason,
        )

    @staticmethod
    def _check_replayable(event: RebalanceEvent, memory: PortfolioMemory, state: Any) -> None:
        # The state is rebuilt from events alone; if the policy ever changes its state in a way
        # the events do not capture, a restarted instance would decide differently. Say so loudly.
        rebuilt = state_after(event, memory.policy)
        if rebuilt != state:
            log.error(
                "policy state of %s cannot be rebuilt from its events: %s != %s",
                event.portfolio_id,
                rebuilt,
                state,
            )


# ------------------------------------------------------------------------------------ service


@dataclass
class RebalancerStats:
    """What the service did (committed work only)."""

    counts: Counter[str] = field(default_factory=Counter)
    """Records read (``metrics``, ``stats``) and outcomes (``rebalance``, ``hold``, ...)."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    transactions: int = 0
    aborted: int = 0

    def line(self) -> str:
        c = self.counts
        dead = sum(self.dead_letters.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.dead_letters.items()))
        return (
            f"{c['metrics']} metrics and {c['stats']} statistics read; "
            f"{c['rebalance']} rebalance(s), {c['hold']} hold(s), {c['rearm']} re-arm(s), "
            f"{c['stale']} stale, {c['already_decided']} already decided; "
            f"{dead} dead letter(s){f' ({reasons})' if reasons else ''}; "
            f"{self.transactions} transaction(s), {self.aborted} aborted"
        )


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a record was read, for dead letters and offsets."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    replayed: bool
    """Read before, by this group (offset below the last committed ``processed:`` mark)."""


@dataclass(frozen=True, slots=True)
class _PendingMetrics:
    metrics: PortfolioMetrics
    source: _Source
    seq: int
    """Order in which the service read it (to tell whether the memory was refreshed since)."""


@dataclass(frozen=True, slots=True)
class _CachedStats:
    stats: PortfolioStats
    source: _Source


class _Lookup(enum.Enum):
    """Why :meth:`RebalancerService._stats_for` found no statistics."""

    WAITING = "waiting"
    MISSING = "missing"


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
        Where a group without committed offsets starts: the oldest records (True) or new ones.
    notifier
        Where notifications go (default: a :class:`~.notify.Notifier` using apprise).
    clock
        The wall clock in epoch milliseconds (default: the system's), against which records
        stamped in the future are refused (``validation.max_future_skew_ms``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str | None = None,
        instance: str | None = None,
        from_beginning: bool = False,
        notifier: Notifier | None = None,
        progress: Progress | None = None,
        status_interval_s: float = 30.0,
        commit_interval_s: float = 0.5,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.group_id = group_id or settings.rebalancer.group_id
        self.instance = instance or socket.gethostname()
        self.transactional_id = transactional_id(self.group_id, self.instance)
        self.from_beginning = from_beginning
        self.decider = Decider(settings, clock=clock)
        self._clock = self.decider.intake.clock
        self.memory = Memory({pid: self.decider.tickers(pid) for pid in self.decider.portfolio_ids})
        self.notifier = notifier or Notifier()
        self.stats = RebalancerStats()
        self._progress = progress or log.info
        self._status_interval_s = status_interval_s
        self._commit_interval_s = commit_interval_s
        self._metrics = contract(settings, "metrics")
        self._updated = contract(settings, "updated_stats")
        self._weights = contract(settings, "weights")
        self._events = contract(settings, "rebalance_events")
        self._dead = contract(settings, "dead_letter")
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._follower: TopicFollower | None = None
        self._reset_buffers()
        self._committed: dict[tuple[str, int], int] = {}
        self._processed: dict[tuple[str, int], int] = {}
        self._in_transaction = False
        self._fatal = False
        self._staged_counts: Counter[str] = Counter()
        self._staged_dead: Counter[str] = Counter()
        self._staged_notifications: list[Notification] = []
        self._staged_events: list[RebalanceEvent] = []
        self._assignment: list[tuple[str, int]] = []
        self._just_assigned = False
        self._abort_before_next_step = False
        self._seq = 0
        self._refreshed_seq = -1
        self._last_commit = time.monotonic()

    @property
    def assigned_partitions(self) -> tuple[tuple[str, int], ...]:
        """The (topic, partition) pairs this instance owns now."""
        return tuple(self._assignment)

    def _reset_buffers(self) -> None:
        self._pending: dict[str, deque[_PendingMetrics]] = {}
        self._stats_cache: dict[str, dict[int, _CachedStats]] = {}
        self._floor: dict[str, int] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._first: dict[tuple[str, int], int] = {}
        self._overflowing: set[str] = set()

    # -- configuration ------------------------------------------------------------------------

    def _producer_config(self) -> dict[str, Any]:
        return producer_config(
            self.settings.kafka,
            **{
                "client.id": f"{self.settings.kafka.client_id}-rebalancer-{self.instance}",
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                # In a transaction a message may not outlive it.
                "message.timeout.ms": TRANSACTION_TIMEOUT_MS,
                "linger.ms": 5,
            },
        )

    def _consumer_config(self) -> dict[str, Any]:
        return {
            **self.settings.kafka.client_config(),
            "client.id": f"{self.settings.kafka.client_id}-rebalancer-{self.instance}",
            "group.id": self.group_id,
            # Co-partitioned topics: range gives partition i of both to the same instance.
            "partition.assignment.strategy": "range",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if self.from_beginning else "latest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
            "logger": logging.getLogger("streamfolio.librdkafka"),
        }

    # -- lifecycle ----------------------------------------------------------------------------

    def run(
        self, stop_event: threading.Event, *, duration_s: float | None = None
    ) -> RebalancerStats:
        """Run until ``stop_event`` is set (or ``duration_s`` passed); returns what was done.

        On the way out the open transaction is committed (or aborted if that fails), the
        consumer leaves the group, and queued notifications get a few seconds to go out.
        """
        started = time.monotonic()
        self._producer = Producer(self._producer_config())
        try:
            self._producer.init_transactions(60.0)
        except KafkaException as exc:
            raise RebalancerError(f"cannot start transactions: {exc.args[0]}") from None
        self._follower = TopicFollower(
            self.settings, self.memory, group_id=self.group_id, intake=self.decider.intake
        )
        try:
            self._follower.catch_up(timeout_s=60.0)
            self._progress(
                f"rebalancer {self.instance}: memory rebuilt from {self._follower.read} record(s) "
                f"of {self._weights.name}, {self._events.name} and "
                f"{self.settings.topics.initial_stats}"
                + _ignored(self._follower.skipped)
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
        waiting = sum(len(q) for q in self._pending.values())
        return self.stats.line() + (
            f"; {waiting} metrics waiting for statistics" if waiting else ""
        )

    def _shutdown(self) -> None:
        try:
            if self._consumer is not None:
                if not self._fatal:
                    try:
                        self._commit()
                    except (_AbortableError, RebalancerError) as exc:
                        log.warning("could not commit on the way out (%s); aborting", exc)
                        self._abort(rewind=False)
                self._consumer.close()  # leaves the group: the others take the partitions now
        finally:
            if self._follower is not None:
                self._follower.close()
            self.notifier.close()
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
        self._progress(f"rebalancer {self.instance}: assigned {_describe(partitions)}")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget_partitions()
        if partitions:
            self._progress(f"rebalancer {self.instance}: revoked {_describe(partitions)}")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("rebalancer %s lost its partitions (session expired)", self.instance)
        self._forget_partitions()

    def _forget_partitions(self) -> None:
        if self._in_transaction:  # cannot happen (see above); never commit for lost partitions
            log.error("partitions revoked with a transaction open; it will be aborted")
            self._abort_before_next_step = True
        self._reset_buffers()
        self._assignment = []
        self._committed.clear()
        self._processed.clear()

    def _after_assign(self) -> None:
        """Prepare newly assigned partitions before their first records are handled."""
        assert self._consumer is not None
        self._just_assigned = False
        # Another instance may have committed decisions for these portfolios a moment ago.
        self._refresh_memory()
        if not self._assignment:
            return
        wanted = [TopicPartition(t, p) for t, p in self._assignment]
        for tp in self._consumer.committed(wanted, timeout=30.0):
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                self._committed[key] = tp.offset
                self._processed[key] = max(tp.offset, _processed_mark(tp.metadata))

    # -- the loop -----------------------------------------------------------------------------

    def _step(self) -> None:
        assert self._consumer is not None and self._follower is not None
        assert self._producer is not None
        messages = self._consumer.consume(num_messages=500, timeout=0.2)
        if self._abort_before_next_step:
            self._abort_before_next_step = False
            self._abort(rewind=False)
        if self._just_assigned:
            self._after_assign()
        try:
            self._follower.drain()
            for message in messages:
                self._on_message(message)
            self._process_ready()
            self._producer.poll(0)
            # Whatever was produced is committed before the next consume() (see above);
            # offsets alone may wait a little, to keep transactions few when nothing happens.
            if self._in_transaction or (
                time.monotonic() - self._last_commit >= self._commit_interval_s
            ):
                self._commit()
        except _AbortableError as exc:
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
        key = (topic, partition)
        self._first.setdefault(key, offset)
        self._next[key] = offset + 1
        self._seq += 1
        source = _Source(
            topic,
            partition,
            offset,
            message.key(),
            message.value() or b"",
            offset < self._processed.get(key, -1),
        )
        self._read(source)

    def _read(self, source: _Source) -> None:
        """Judge one record of the metrics or statistics topic: queue it, cache it or
        dead-letter it."""
        is_metrics = source.topic == self._metrics.name
        self._staged_counts["metrics" if is_metrics else "stats"] += 1
        try:
            if is_metrics:
                metrics = self.decider.metrics_from(source.value, source.key)
                pending = _PendingMetrics(metrics, source, self._seq)
                self._pending.setdefault(metrics.portfolio_id, deque()).append(pending)
            else:
                self._cache_stats(self.decider.stats_from(source.value, source.key), source)
        except Rejected as refused:
            self._dead_letter(refused, source)

    def _cache_stats(self, stats: PortfolioStats, source: _Source) -> None:
        pid = stats.portfolio_id
        cache = self._stats_cache.setdefault(pid, {})
        cache[stats.timestamp] = _CachedStats(stats, source)  # a re-sent record replaces one
        if len(cache) > MAX_STATS_AHEAD:
            del cache[min(cache)]
            if pid not in self._overflowing:
                self._overflowing.add(pid)
                log.warning(
                    "%s: more than %d statistics records ahead of its metrics; dropping the "
                    "oldest (is the job emitting metrics for it?)",
                    pid,
                    MAX_STATS_AHEAD,
                )

    def _process_ready(self) -> None:
        for pid, queue in self._pending.items():
            while queue:
                item = queue[0]
                if self.decider.already_decided(item.metrics, self.memory.view(pid)):
                    self._staged_counts["already_decided"] += 1
                    queue.popleft()
                    continue
                stats = self._stats_for(pid, item)
                if stats is _Lookup.WAITING:
                    if len(queue) <= MAX_PENDING_METRICS or self._stats_unread(item.source):
                        break  # its statistics have not arrived yet; later metrics wait behind
                    queue.popleft()
                    self._dead_letter(
                        Rejected(
                            "stats_missing",
                            f"{pid}: no statistics stamped {item.metrics.stats_timestamp} while "
                            f"{len(queue)} later metrics records waited behind it (at most "
                            f"{MAX_PENDING_METRICS} wait)",
                        ),
                        item.source,
                    )
                    continue
                queue.popleft()
                if stats is _Lookup.MISSING:
                    self._dead_letter(
                        Rejected(
                            "stats_missing",
                            f"{pid}: no statistics stamped {item.metrics.stats_timestamp}; "
                            "later metrics name later statistics, which arrived",
                        ),
                        item.source,
                    )
                    continue
                outcome = self._decide(item, stats)
                if outcome is not None:
                    self._apply(outcome)
                self._advance_floor(pid, item.metrics.stats_timestamp)

    def _stats_unread(self, source: _Source) -> bool:
        """Whether the statistics partition co-partitioned with ``source`` still has records
        this instance has not read (as far as the consumer knows, without asking the broker)."""
        if self._consumer is None:
            return False
        tp = TopicPartition(self._updated.name, source.partition)
        try:
            marks = self._consumer.get_watermark_offsets(tp, cached=True)
            (position,) = self._consumer.position([tp])
        except (KafkaException, RuntimeError, ValueError) as exc:
            log.debug("no position for %s[%d]: %s", tp.topic, tp.partition, exc)
            return False
        if marks is None or marks[1] < 0 or position.offset < 0:
            return False
        return bool(position.offset < marks[1])

    def _stats_for(self, pid: str, item: _PendingMetrics) -> PortfolioStats | _Lookup:
        wanted = item.metrics.stats_timestamp
        cached = self._stats_cache.get(pid, {}).get(wanted)
        if cached is not None:
            return cached.stats
        seed = self.memory.initial_stats(pid, wanted)
        if seed is None and item.seq > self._refreshed_seq:
            # A seed is committed before the job can emit metrics naming it: read to the end.
            self._refresh_memory()
            seed = self.memory.initial_stats(pid, wanted)
        if seed is not None:
            return seed
        # The job writes a portfolio's statistics in order, each before the metrics naming it.
        # If a later metrics record of the portfolio names later statistics and those have been
        # read, the ones named here (written earlier, in the same partition) are not coming.
        # Only that order is reliable: the two topics are read in no particular order with each
        # other, and a job replaying from a checkpoint sends older statistics again.
        cache = self._stats_cache.get(pid, {})
        for later in self._pending.get(pid, ()):
            named = later.metrics.stats_timestamp
            if named > wanted and named in cache:
                return _Lookup.MISSING
        return _Lookup.WAITING

    def _decide(self, item: _PendingMetrics, stats: PortfolioStats) -> Outcome | None:
        pid = item.metrics.portfolio_id
        try:
            outcome = self.decider.decide(item.metrics, stats, self.memory.view(pid))
            if outcome.kind == "stale" and item.seq > self._refreshed_seq:
                # Perhaps someone published weights we have not read yet: read to the end and
                # judge again, so every instance judges against every weights record that was
                # committed before the metrics were.
                self._refresh_memory()
                outcome = self.decider.decide(item.metrics, stats, self.memory.view(pid))
        except Exception as exc:  # a bug must cost one decision, not the service
            log.exception("deciding on metrics of %s failed", pid)
            self._dead_letter(
                Rejected("decision_failed", f"{type(exc).__name__}: {exc}"), item.source
            )
            return None
        return outcome

    def _apply(self, outcome: Outcome) -> None:
        self._staged_counts[outcome.kind] += 1
        if outcome.weights is not None:
            self._produce(self._weights, outcome.weights.to_record())
        if outcome.event is not None:
            self._produce(self._events, outcome.event.to_record())
            self._staged_events.append(outcome.event)
            self.memory.stage(outcome.event.portfolio_id, outcome.memory)
        if outcome.notification is not None:
            self._staged_notifications.append(outcome.notification)

    def _advance_floor(self, pid: str, stats_timestamp: int) -> None:
        # Metrics name ever newer statistics: older cached ones are no longer needed (and no
        # longer hold the committed offset back).
        self._floor[pid] = max(self._floor.get(pid, stats_timestamp), stats_timestamp)
        cache = self._stats_cache.get(pid)
        if cache:
            for ts in [ts for ts in cache if ts < self._floor[pid]]:
                del cache[ts]

    def _refresh_memory(self) -> None:
        if self._follower is None:
            return
        self._refreshed_seq = self._seq
        try:
            self._follower.catch_up(timeout_s=30.0)
        except MemoryTopicsError as exc:
            log.warning("could not refresh the memory: %s", exc)

    # -- producing ----------------------------------------------------------------------------

    def _begin(self) -> None:
        producer = self._producer
        assert producer is not None
        if not self._in_transaction:
            self._retry(producer.begin_transaction)
            self._in_transaction = True

    def _produce(self, target: TopicContract, record: Mapping[str, Any]) -> None:
        assert self._producer is not None
        self._begin()
        value = codec_for(target.schema).encode(record)
        key = target.key_of(dict(record))
        # The job places weights among the bars by the record timestamp: stamp the event time.
        stamp = record.get("timestamp")
        extra: dict[str, Any] = {"timestamp": int(stamp)} if isinstance(stamp, int) else {}
        while True:
            try:
                self._producer.produce(target.name, value=value, key=key, **extra)
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:  # the producer is in an error state
                self._classify(exc)

    def _dead_letter(self, refused: Rejected, source: _Source) -> None:
        if source.replayed:
            return  # dead-lettered when it was first read
        reason = refused.reason
        if self.stats.dead_letters[reason] + self._staged_dead[reason] == 0:
            log.warning(
                "dead-lettered (%s): %s; further ones are only counted", reason, refused.detail
            )
        self._staged_dead[reason] += 1
        letter = refused.dead_letter(
            source_topic=source.topic,
            payload=source.value,
            component=COMPONENT,
            partition=source.partition,
            offset=source.offset,
            key=source.key,
            now_ms=self._clock(),  # for operators only (schema doc)
        )
        self._produce(self._dead, letter.to_record())

    # -- transactions -------------------------------------------------------------------------

    def _safe_offsets(self) -> list[TopicPartition]:
        """Offsets to commit: what was read, but not past any record still needed."""
        safe = dict(self._next)
        for queue in self._pending.values():
            for item in queue:
                key = (item.source.topic, item.source.partition)
                safe[key] = min(safe.get(key, item.source.offset), item.source.offset)
        for cache in self._stats_cache.values():
            for cached in cache.values():
                key = (cached.source.topic, cached.source.partition)
                safe[key] = min(safe.get(key, cached.source.offset), cached.source.offset)
        offsets = []
        for key, offset in sorted(safe.items()):
            read = max(self._next.get(key, offset), self._processed.get(key, 0))
            if self._committed.get(key) == offset and self._processed.get(key) == read:
                continue
            offsets.append(
                TopicPartition(key[0], key[1], offset, metadata=f"{PROCESSED_PREFIX}{read}")
            )
        return offsets

    def _commit(self) -> None:
        """Commit the open transaction with the consumer's safe offsets.

        Raises :class:`_AbortableError` when the transaction must be aborted instead.
        """
        assert self._producer is not None and self._consumer is not None
        self._last_commit = time.monotonic()
        offsets = self._safe_offsets()
        if not self._in_transaction and not offsets:
            self._merge_staged()  # counts of records that changed nothing
            return
        producer, consumer = self._producer, self._consumer
        self._begin()
        if offsets:
            metadata = consumer.consumer_group_metadata()
            self._retry(lambda: producer.send_offsets_to_transaction(offsets, metadata, 30.0))
        self._retry(lambda: producer.commit_transaction(30.0))
        self._in_transaction = False
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self._committed[key] = tp.offset
            self._processed[key] = _processed_mark(tp.metadata)
        self.stats.transactions += 1
        self.memory.commit()
        self._merge_staged()
        for event in self._staged_events:
            self._progress(
                f"{event.portfolio_id}: {event.decision} at {event.timestamp} ({event.reason})"
                + (
                    f" -> {_short_weights(event.new_weights)}"
                    if event.decision == DECISION_REBALANCE
                    else ""
                )
            )
        self._staged_events.clear()
        for notification in self._staged_notifications:
            self.notifier.submit(notification)
        self._staged_notifications.clear()

    def _merge_staged(self) -> None:
        self.stats.counts.update(self._staged_counts)
        self.stats.dead_letters.update(self._staged_dead)
        self._staged_counts.clear()
        self._staged_dead.clear()

    def _retry(self, call: Callable[[], object], attempts: int = 10) -> None:
        """Run a transactional call, retrying what is retriable (see :meth:`_classify`)."""
        for attempt in range(attempts):
            try:
                call()
                return
            except KafkaException as exc:
                if attempt == attempts - 1:
                    raise _AbortableError(str(exc.args[0])) from None
                self._classify(exc)
                time.sleep(0.2 * (attempt + 1))

    def _classify(self, exc: KafkaException) -> None:
        """Return if ``exc`` is worth retrying; raise :class:`RebalancerError` if it is fatal
        (fenced by a newer instance with our transactional id), else :class:`_AbortableError`."""
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError):
            raise _AbortableError(str(exc)) from None
        if error.fatal():
            self._fatal = True
            raise RebalancerError(_fatal_message(error, self.transactional_id)) from None
        if error.txn_requires_abort() or not error.retriable():
            raise _AbortableError(str(error)) from None

    def _abort(self, *, rewind: bool) -> None:
        """Abort the open transaction, forget what it decided and (``rewind``) read again from
        the last committed offsets."""
        assert self._producer is not None
        if self._in_transaction and not self._fatal:
            producer = self._producer
            try:
                self._retry(lambda: producer.abort_transaction(30.0))
            except _AbortableError as exc:
                log.warning("abort failed: %s", exc)
            self._in_transaction = False
            self.stats.aborted += 1
        self.memory.rollback()
        self._staged_counts.clear()
        self._staged_dead.clear()
        self._staged_events.clear()
        self._staged_notifications.clear()
        if rewind and self._consumer is not None:
            for key, first in self._first.items():
                target = self._committed.get(key, first)
                try:
                    self._consumer.seek(TopicPartition(key[0], key[1], target))
                except KafkaException as exc:
                    log.warning("cannot rewind %s[%d] to %d: %s", key[0], key[1], target, exc)
        self._reset_buffers()


class _AbortableError(Exception):
    """The transaction must be aborted; the service goes on."""


def _fatal_message(error: KafkaError, txn_id: str) -> str:
    if error.code() == KafkaError._FENCED or "fenced" in str(error).lower():
        return (
            f"another rebalancer uses transactional id {txn_id!r} (same group and --instance); "
            f"this one is fenced off and stops: give each instance its own --instance ({error})"
        )
    return f"fatal Kafka error: {error}"


def _processed_mark(metadata: str | None) -> int:
    if metadata and metadata.startswith(PROCESSED_PREFIX):
        try:
            return int(metadata[len(PROCESSED_PREFIX) :])
        except ValueError:
            return -1
    return -1


def _describe(partitions: list[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by_topic.items())) or "nothing"


def _ignored(skipped: Counter[str]) -> str:
    if not skipped:
        return ""
    return " (ignored: " + ", ".join(f"{r} {n}" for r, n in sorted(skipped.items())) + ")"


def _short_weights(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{t} {w:.4f}" for t, w in weights.items())
