"""What the rebalancer does with each record it reads, staged until its transaction commits.

A :class:`Batch` takes the records of the metrics and updated-statistics topics one by one: the
:class:`~.decider.Decider` judges each (a refused one is dead-lettered with its reason), the
:class:`~.join.StatsJoin` holds a metrics record until the statistics it names are there (or will
not come: ``stats_missing``), then the decider decides against the portfolio's memory and the
outcome is produced into the open :class:`~.transactions.Transaction`. What the transaction did is
staged (counts, decision events for the progress lines, notifications, the portfolios' memory)
and made known only once it commits (:meth:`Batch.merge`, :meth:`Batch.announce`), or dropped
when it aborts (:meth:`Batch.discard`). Records the group had read before a restart
(``replayed``) are not dead-lettered twice.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from streamfolio.intake import Rejected
from streamfolio.kafka.topics import TopicContract
from streamfolio.messages import PortfolioStats, RebalanceEvent
from streamfolio.observability.metrics import (
    REBALANCER_DEAD_LETTERS,
    REBALANCER_DECISION_SECONDS,
    REBALANCER_DECISIONS,
    REBALANCER_LAG_SECONDS,
    REBALANCER_RECORDS,
)
from streamfolio.rebalancer.decider import Decider, Outcome
from streamfolio.rebalancer.follower import MemoryTopicsError, TopicFollower
from streamfolio.rebalancer.join import PendingMetrics, Source, StatsJoin
from streamfolio.rebalancer.memory import DECISION_REBALANCE, Memory
from streamfolio.rebalancer.notify import Notification, Notifier
from streamfolio.rebalancer.transactions import Transaction

__all__ = ["COMPONENT", "Batch", "RebalancerStats"]

log = logging.getLogger(__name__)

COMPONENT: Final = "rebalancer"
"""``DeadLetter.component`` of what this service dead-letters."""


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
            f"{c['stale']} stale, {c['already_decided']} already decided"
            + (f", {c['removed']} of removed portfolios" if c["removed"] else "")
            + "; "
            f"{dead} dead letter(s){f' ({reasons})' if reasons else ''}; "
            f"{self.transactions} transaction(s), {self.aborted} aborted"
        )


@dataclass(frozen=True, slots=True)
class Targets:
    """The topics a batch produces to."""

    weights: TopicContract
    events: TopicContract
    dead: TopicContract


class Batch:
    """Judges, joins and decides the records read, producing into ``txn`` (see the module doc).

    ``stats`` are the service's committed counts (a reason's first dead letter is logged);
    ``stats_unread`` says whether the statistics partition co-partitioned with a record still
    has unread records; :attr:`follower` (set once the service runs) refreshes the memory.
    """

    def __init__(
        self,
        decider: Decider,
        memory: Memory,
        txn: Transaction,
        targets: Targets,
        stats: RebalancerStats,
        *,
        metrics_topic: str,
        stats_unread: Callable[[Source], bool],
    ) -> None:
        self.decider = decider
        self.memory = memory
        self.txn = txn
        self.targets = targets
        self.stats = stats
        self._metrics_topic = metrics_topic
        self._stats_unread = stats_unread
        self._clock = decider.intake.clock
        self.follower: TopicFollower | None = None
        self.join = StatsJoin()
        self.counts: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.notifications: list[Notification] = []
        self.events: list[RebalanceEvent] = []
        self.seq = 0
        self._refreshed_seq = -1

    # -- what the open transaction did ------------------------------------------------------

    def merge(self) -> None:
        """Add the staged counts to the committed ones (the transaction committed)."""
        self.stats.counts.update(self.counts)
        self.stats.dead_letters.update(self.dead_letters)
        for kind, count in self.counts.items():
            if kind in ("metrics", "stats"):
                REBALANCER_RECORDS.labels(kind).inc(count)
            else:
                REBALANCER_DECISIONS.labels(kind).inc(count)
        for reason, count in self.dead_letters.items():
            REBALANCER_DEAD_LETTERS.labels(reason).inc(count)
        self.counts.clear()
        self.dead_letters.clear()

    def announce(self, progress: Callable[[str], None], notifier: Notifier) -> None:
        """Tell of the committed decisions: a progress line each, and their notifications."""
        for event in self.events:
            progress(
                f"{event.portfolio_id}: {event.decision} at {event.timestamp} ({event.reason})"
                + (
                    f" -> {_short_weights(event.new_weights)}"
                    if event.decision == DECISION_REBALANCE
                    else ""
                )
            )
        self.events.clear()
        for notification in self.notifications:
            notifier.submit(notification)
        self.notifications.clear()

    def discard(self) -> None:
        """Forget what was staged (the transaction aborted)."""
        self.counts.clear()
        self.dead_letters.clear()
        self.events.clear()
        self.notifications.clear()

    # -- records ------------------------------------------------------------------------------

    def read(self, source: Source) -> None:
        """Judge one record of the metrics or statistics topic: queue it, cache it or
        dead-letter it."""
        self.seq += 1
        is_metrics = source.topic == self._metrics_topic
        self.counts["metrics" if is_metrics else "stats"] += 1
        try:
            if is_metrics:
                metrics = self.decider.metrics_from(source.value, source.key)
                REBALANCER_LAG_SECONDS.set((self._clock() - metrics.timestamp) / 1000)
                self.join.add_metrics(metrics, source, self.seq)
            else:
                self.join.add_stats(self.decider.stats_from(source.value, source.key), source)
        except Rejected as refused:
            self.dead_letter(refused, source)

    def process_ready(self) -> None:
        """Decide on (or dead-letter) every metrics record that need not wait any longer."""
        for match in self.join.ready(
            decided=lambda m: self.decider.already_decided(m, self.memory.view(m.portfolio_id)),
            seed=self._seed,
            stats_unread=self._stats_unread,
        ):
            if match.kind == "already_decided":
                self.counts["already_decided"] += 1
            elif match.refused is not None:
                self.dead_letter(match.refused, match.item.source)
            elif match.stats is not None:
                outcome = self._decide(match.item, match.stats)
                if outcome is not None:
                    self._apply(outcome)

    def _seed(self, item: PendingMetrics) -> PortfolioStats | None:
        pid, wanted = item.metrics.portfolio_id, item.metrics.stats_timestamp
        seed = self.memory.initial_stats(pid, wanted)
        if seed is None and item.seq > self._refreshed_seq:
            # A seed is committed before the job can emit metrics naming it: read to the end.
            self.refresh_memory()
            seed = self.memory.initial_stats(pid, wanted)
        return seed

    def _decide(self, item: PendingMetrics, stats: PortfolioStats) -> Outcome | None:
        pid = item.metrics.portfolio_id
        try:
            with REBALANCER_DECISION_SECONDS.time():
                outcome = self.decider.decide(item.metrics, stats, self.memory.view(pid))
            if outcome.kind == "stale" and item.seq > self._refreshed_seq:
                # Perhaps someone published weights we have not read yet: read to the end and
                # judge again, so every instance judges against every weights record that was
                # committed before the metrics were.
                self.refresh_memory()
                outcome = self.decider.decide(item.metrics, stats, self.memory.view(pid))
        except Exception as exc:  # a bug must cost one decision, not the service
            log.exception("deciding on metrics of %s failed", pid, extra={"portfolio_id": pid})
            self.dead_letter(
                Rejected("decision_failed", f"{type(exc).__name__}: {exc}"), item.source
            )
            return None
        return outcome

    def _apply(self, outcome: Outcome) -> None:
        self.counts[outcome.kind] += 1
        if outcome.weights is not None:
            self.txn.produce(self.targets.weights, outcome.weights.to_record())
        if outcome.event is not None:
            self.txn.produce(self.targets.events, outcome.event.to_record())
            self.events.append(outcome.event)
            self.memory.stage(outcome.event.portfolio_id, outcome.memory)
        if outcome.notification is not None:
            self.notifications.append(outcome.notification)

    def refresh_memory(self) -> None:
        """Read the memory topics to their end (decisions another instance committed)."""
        if self.follower is None:
            return
        self._refreshed_seq = self.seq
        try:
            self.follower.catch_up(timeout_s=30.0)
        except MemoryTopicsError as exc:
            log.warning("could not refresh the memory: %s", exc)

    def dead_letter(self, refused: Rejected, source: Source) -> None:
        """Produce the dead letter of a refused record (unless it is a replay)."""
        if source.replayed:
            return  # dead-lettered when it was first read
        reason = refused.reason
        if self.stats.dead_letters[reason] + self.dead_letters[reason] == 0:
            log.warning(
                "dead-lettered (%s): %s; further ones are only counted",
                reason,
                refused.detail,
                extra={
                    "topic": source.topic,
                    "partition": source.partition,
                    "offset": source.offset,
                    "reason": reason,
                },
            )
        self.dead_letters[reason] += 1
        letter = refused.dead_letter(
            source_topic=source.topic,
            payload=source.value,
            component=COMPONENT,
            partition=source.partition,
            offset=source.offset,
            key=source.key,
            now_ms=self._clock(),  # for operators only (schema doc)
        )
        self.txn.produce(self.targets.dead, letter.to_record())


def _short_weights(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{t} {w:.4f}" for t, w in weights.items())
