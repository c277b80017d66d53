"""Joining each metrics record with the statistics it names, across two topics read in any order.

A metrics record waits (in its portfolio's queue, in reading order) until the statistics it names
(``statsTimestamp``) have arrived: the metrics and updated-statistics topics are not ordered with
each other. A seed's statistics come from the initial-statistics topic instead (the memory keeps
them). Once a later metrics record of the portfolio names later statistics that have arrived, the
named ones never will (a portfolio's statistics are ordered in their partition): the metrics
record is refused as ``stats_missing``. The wait is bounded: once more than
:data:`MAX_PENDING_METRICS` metrics records of a portfolio wait (and the statistics partition has
been read to its end) the oldest is refused as ``stats_missing``, so the committable offset moves
on; and at most :data:`MAX_STATS_AHEAD` statistics records per portfolio are kept ahead of its
metrics. :meth:`StatsJoin.held` says which records are still needed, so that the committed
offsets never pass them. No Kafka here: the service feeds records in and says what to do with
what comes out of :meth:`StatsJoin.ready`.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from streamfolio.intake import Rejected
from streamfolio.messages import PortfolioMetrics, PortfolioStats

__all__ = [
    "MAX_PENDING_METRICS",
    "MAX_STATS_AHEAD",
    "CachedStats",
    "Lookup",
    "Match",
    "PendingMetrics",
    "Source",
    "StatsJoin",
]

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read, for dead letters and offsets."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    replayed: bool
    """Read before, by this group (offset below the last committed ``processed:`` mark)."""


@dataclass(frozen=True, slots=True)
class PendingMetrics:
    metrics: PortfolioMetrics
    source: Source
    seq: int
    """Order in which the service read it (to tell whether the memory was refreshed since)."""


@dataclass(frozen=True, slots=True)
class CachedStats:
    stats: PortfolioStats
    source: Source


class Lookup(enum.Enum):
    """Why :meth:`StatsJoin.ready` found no statistics for a metrics record."""

    WAITING = "waiting"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Match:
    """What :meth:`StatsJoin.ready` hands over for a metrics record it let go of.

    ``kind``: ``decide`` (with ``stats``, the statistics it names), ``already_decided`` (not newer
    than the portfolio's last decision) or ``stats_missing`` (with ``refused``, the dead letter's
    reason: its statistics will not come).
    """

    kind: Literal["decide", "already_decided", "stats_missing"]
    item: PendingMetrics
    stats: PortfolioStats | None = None
    refused: Rejected | None = None


class StatsJoin:
    """Metrics records waiting for their statistics, and statistics waiting for their metrics,
    per portfolio (see the module doc)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (the partitions were revoked, or the transaction aborted)."""
        self.pending: dict[str, deque[PendingMetrics]] = {}
        self.stats_cache: dict[str, dict[int, CachedStats]] = {}
        self._floor: dict[str, int] = {}
        self._overflowing: set[str] = set()

    def waiting(self) -> int:
        """How many metrics records wait for their statistics."""
        return sum(len(q) for q in self.pending.values())

    def add_metrics(self, metrics: PortfolioMetrics, source: Source, seq: int) -> None:
        """Queue an accepted metrics record behind its portfolio's earlier ones."""
        pending = PendingMetrics(metrics, source, seq)
        self.pending.setdefault(metrics.portfolio_id, deque()).append(pending)

    def add_stats(self, stats: PortfolioStats, source: Source) -> None:
        """Keep accepted statistics (in their portfolio's ticker order) until metrics name them."""
        pid = stats.portfolio_id
        cache = self.stats_cache.setdefault(pid, {})
        cache[stats.timestamp] = CachedStats(stats, source)  # a re-sent record replaces one
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

    def held(self) -> Iterator[tuple[str, int, int]]:
        """(topic, partition, offset) of every record still needed: the committed offsets must
        not pass them."""
        for queue in self.pending.values():
            for item in queue:
                yield item.source.topic, item.source.partition, item.source.offset
        for cache in self.stats_cache.values():
            for cached in cache.values():
                yield cached.source.topic, cached.source.partition, cached.source.offset

    def ready(
        self,
        *,
        decided: Callable[[PortfolioMetrics], bool],
        seed: Callable[[PendingMetrics], PortfolioStats | None],
        stats_unread: Callable[[Source], bool],
    ) -> Iterator[Match]:
        """Let go of every metrics record that need not wait any longer, oldest first per
        portfolio; a record waiting for its statistics holds back the later ones.

        ``decided`` says whether metrics are not newer than their portfolio's last decision (it
        is asked again for each record, so decisions applied between two matches count);
        ``seed`` gives the initial statistics a record names, if any; ``stats_unread`` says
        whether the statistics partition co-partitioned with a record's still has unread
        records. The caller handles each match before the next is computed.
        """
        for pid, queue in self.pending.items():
            while queue:
                item = queue[0]
                if decided(item.metrics):
                    queue.popleft()
                    yield Match("already_decided", item)
                    continue
                stats = self._lookup(pid, item, seed)
                if stats is Lookup.WAITING:
                    if len(queue) <= MAX_PENDING_METRICS or stats_unread(item.source):
                        break  # its statistics have not arrived yet; later metrics wait behind
                    queue.popleft()
                    refused = Rejected(
                        "stats_missing",
                        f"{pid}: no statistics stamped {item.metrics.stats_timestamp} while "
                        f"{len(queue)} later metrics records waited behind it (at most "
                        f"{MAX_PENDING_METRICS} wait)",
                    )
                    yield Match("stats_missing", item, refused=refused)
                    continue
                queue.popleft()
                if stats is Lookup.MISSING:
                    refused = Rejected(
                        "stats_missing",
                        f"{pid}: no statistics stamped {item.metrics.stats_timestamp}; "
                        "later metrics name later statistics, which arrived",
                    )
                    yield Match("stats_missing", item, refused=refused)
                    continue
                yield Match("decide", item, stats=stats)
                self._advance_floor(pid, item.metrics.stats_timestamp)

    def _lookup(
        self,
        pid: str,
        item: PendingMetrics,
        seed: Callable[[PendingMetrics], PortfolioStats | None],
    ) -> PortfolioStats | Lookup:
        wanted = item.metrics.stats_timestamp
        cached = self.stats_cache.get(pid, {}).get(wanted)
        if cached is not None:
            return cached.stats
        seeded = seed(item)
        if seeded is not None:
            return seeded
        # The job writes a portfolio's statistics in order, each before the metrics naming it.
        # If a later metrics record of the portfolio names later statistics and those have been
        # read, the ones named here (written earlier, in the same partition) are not coming.
        # Only that order is reliable: the two topics are read in no particular order with each
        # other, and a job replaying from a checkpoint sends older statistics again.
        cache = self.stats_cache.get(pid, {})
        for later in self.pending.get(pid, ()):
            named = later.metrics.stats_timestamp
            if named > wanted and named in cache:
                return Lookup.MISSING
        return Lookup.WAITING

    def _advance_floor(self, pid: str, stats_timestamp: int) -> None:
        # Metrics name ever newer statistics: older cached ones are no longer needed (and no
        # longer hold the committed offset back).
        self._floor[pid] = max(self._floor.get(pid, stats_timestamp), stats_timestamp)
        cache = self.stats_cache.get(pid)
        if cache:
            for ts in [ts for ts in cache if ts < self._floor[pid]]:
                del cache[ts]
