"""What the rebalancer remembers of each portfolio, and the rules that rebuild it from records.

The rebalancer keeps no local files. Everything it must remember between decisions lives in Kafka
topics it (or the bootstrap) writes, read back with ``isolation.level=read_committed`` by
:class:`~streamfolio.rebalancer.follower.TopicFollower` (this module needs no Kafka):

* **Policy state** (:class:`~streamfolio.core.policy.PolicyState`) from the rebalance-events
  topic. Every change of the state is published as an event in the same transaction as the
  decision, so replaying the events reproduces the state exactly (:func:`state_after`):

  - ``rebalance``: an attempt that moved the weights; the policy remembers the Sharpe expected
    after it (``sharpe_after``);
  - ``hold``: an attempt that found nothing worth doing; it remembers the Sharpe it saw
    (``sharpe_before``) and that it held;
  - ``rearm``: no attempt, but the Sharpe left the hysteresis band, so the policy re-armed. The
    policy changes its state this way on updates that decide nothing, and without this record a
    restarted instance would still be disarmed where the first one was armed.

* **Latest weights** per portfolio from the weights topic (any source: bootstrap, manual,
  rebalancer), valid ones only, as the streaming job uses them: a record older than the weights
  held is stale and ignored, as the job ignores it. The rebalancer decides only on metrics
  computed with these weights; metrics computed with weights it has already replaced are stale
  (the job has not caught up yet) and must not re-trigger the policy.

* **Initial statistics** per portfolio from the initial-statistics topic: the job's first metrics
  after a seed refer to them, not to an updated-statistics record.

:class:`PortfolioMemory` is one portfolio's memory; :class:`Memory` holds them per portfolio with
a provisional layer for the open transaction (:meth:`Memory.stage`, :meth:`Memory.commit`,
:meth:`Memory.rollback`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from streamfolio.core.policy import PolicyState
from streamfolio.errors import DataError, SchemaError
from streamfolio.messages import PortfolioStats, RebalanceEvent, Weights

__all__ = [
    "DECISIONS",
    "DECISION_HOLD",
    "DECISION_REARM",
    "DECISION_REBALANCE",
    "SOURCE",
    "Memory",
    "PortfolioMemory",
    "align_stats",
    "same_weights",
    "state_after",
]

DECISION_REBALANCE: Final = "rebalance"
DECISION_HOLD: Final = "hold"
DECISION_REARM: Final = "rearm"
DECISIONS: Final = (DECISION_REBALANCE, DECISION_HOLD, DECISION_REARM)
"""The ``decision`` values of the rebalance events this service writes."""

SOURCE: Final = "rebalancer"
"""``Weights.source`` of the weights this service publishes."""

WEIGHTS_ATOL: Final = 1e-12
"""Two weight vectors are the same when no weight differs by more than this. Weights travel as
Avro doubles, so the job's metrics carry the published weights bit for bit; the tolerance only
absorbs producers that round-trip them through text."""

INITIAL_STATS_KEPT: Final = 8
"""Initial-statistics records remembered per portfolio (the newest); seeds are rare."""


def same_weights(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two ticker -> weight maps hold the same tickers and weights.

    >>> same_weights({"A": 0.5, "B": 0.5}, {"B": 0.5, "A": 0.5 + 1e-15})
    True
    >>> same_weights({"A": 0.5, "B": 0.5}, {"A": 0.6, "B": 0.4})
    False
    """
    if a.keys() != b.keys():
        return False
    return all(math.isclose(a[t], b[t], rel_tol=0.0, abs_tol=WEIGHTS_ATOL) for t in a)


def state_after(event: RebalanceEvent, previous: PolicyState) -> PolicyState:
    """The policy state after ``event``, given the state before it.

    This is the inverse of how the service publishes decisions, and the only way the state is
    rebuilt, so the service checks every decision it makes against it.

    >>> e = RebalanceEvent("p", 60_000, "sharpe 0.20 below threshold 0.50", "rebalance",
    ...                    {"A": 1.0}, {"A": 1.0}, 0.2, 0.9, 0.1, 0.1, 0.0, "optimal")
    >>> state_after(e, PolicyState())  # doctest: +NORMALIZE_WHITESPACE
    PolicyState(armed=False, last_attempt_ms=60000, last_decision_sharpe=0.9,
                last_attempt_held=False)
    """
    if event.decision == DECISION_REBALANCE:
        return PolicyState(
            armed=False,
            last_attempt_ms=event.timestamp,
            last_decision_sharpe=event.sharpe_after,
            last_attempt_held=False,
        )
    if event.decision == DECISION_HOLD:
        return PolicyState(
            armed=False,
            last_attempt_ms=event.timestamp,
            last_decision_sharpe=event.sharpe_before,
            last_attempt_held=True,
        )
    if event.decision == DECISION_REARM:
        return replace(previous, armed=True)
    raise DataError(f"unknown decision {event.decision!r}; expected one of {DECISIONS}")


def align_stats(stats: PortfolioStats, tickers: Sequence[str]) -> PortfolioStats:
    """``stats`` reordered to ``tickers``; :class:`SchemaError` when they cover other tickers.

    >>> s = PortfolioStats.from_arrays("p", 0, ["B", "A"], [2.0, 1.0], [[4.0, 1.0], [1.0, 9.0]])
    >>> align_stats(s, ["A", "B"]).mean
    (1.0, 2.0)
    """
    if stats.tickers == tuple(tickers):
        return stats
    if set(stats.tickers) != set(tickers) or len(stats.tickers) != len(tickers):
        missing = [t for t in tickers if t not in stats.tickers]
        extra = [t for t in stats.tickers if t not in tickers]
        raise SchemaError(
            f"statistics cover other tickers than the portfolio: missing {missing}, extra {extra}"
        )
    index = [stats.tickers.index(t) for t in tickers]
    return replace(
        stats,
        tickers=tuple(tickers),
        mean=tuple(stats.mean[i] for i in index),
        covariance=tuple(tuple(stats.covariance[i][j] for j in index) for i in index),
    )


@dataclass(frozen=True, slots=True)
class PortfolioMemory:
    """What the rebalancer knows of one portfolio before its next decision."""

    policy: PolicyState = field(default_factory=PolicyState)
    last_event_ms: int | None = None
    """Timestamp of the latest decision event; metrics not after it were already decided."""
    last_decision: str | None = None
    """``decision`` of the latest event (``rebalance``, ``hold`` or ``rearm``)."""
    weights: Mapping[str, float] | None = None
    """The latest valid weights published for the portfolio, or None if none were."""
    weights_timestamp: int | None = None
    weights_source: str = ""
    weights_read_back: bool = True
    """False while weights this instance published have not been read back from the topic:
    until then every weights record read precedes them in the log and is already superseded."""

    def after_event(self, event: RebalanceEvent) -> PortfolioMemory | None:
        """This memory with ``event`` applied, or None if it is not newer than what is known.

        Events of a portfolio have strictly increasing timestamps (one decision per metrics
        timestamp at most), so an older one is a replay of what is already applied.
        """
        if self.last_event_ms is not None and event.timestamp <= self.last_event_ms:
            return None
        if event.decision not in DECISIONS:
            return None
        return replace(
            self,
            policy=state_after(event, self.policy),
            last_event_ms=event.timestamp,
            last_decision=event.decision,
        )

    def after_weights(self, weights: Weights) -> PortfolioMemory | None:
        """This memory once ``weights`` (read from the topic, in log order) are known, or None
        if they change nothing: superseded by our own unread weights, or older than the weights
        held (:meth:`stale_weights`)."""
        if not self.weights_read_back:
            if not self._is_own(weights):
                return None  # published before our own, still unread, weights: superseded
            return replace(self, weights_read_back=True)
        if self.stale_weights(weights) is not None:
            return None
        return replace(
            self,
            weights=dict(weights.weights),
            weights_timestamp=weights.timestamp,
            weights_source=weights.source,
        )

    def stale_weights(self, weights: Weights) -> str | None:
        """Why ``weights`` are older than the weights held (a replayed or late record, which
        the job ignores too), or None. Equal stamps are not stale: the rebalancer answers
        metrics stamped T with weights stamped T."""
        if self.weights_timestamp is not None and weights.timestamp < self.weights_timestamp:
            return (
                f"weights stamped {weights.timestamp} are older than those held "
                f"(stamped {self.weights_timestamp})"
            )
        return None

    def _is_own(self, weights: Weights) -> bool:
        return (
            weights.source == SOURCE
            and weights.timestamp == self.weights_timestamp
            and self.weights is not None
            and same_weights(weights.weights, self.weights)
        )


class Memory:
    """Per-portfolio :class:`PortfolioMemory`, with a provisional layer for the open transaction.

    Decisions :meth:`stage` their memory; :meth:`commit` makes it permanent once the transaction
    commits, :meth:`rollback` forgets it when it aborts. What the
    :class:`~.follower.TopicFollower` reads goes straight to the committed layer: anything it can
    read precedes the open transaction in the log, so staged memory, being newer, wins at commit.

    >>> memory = Memory({"p": ("A", "B")})
    >>> memory.stage("p", PortfolioMemory(last_event_ms=5))
    >>> memory.view("p").last_event_ms, memory.committed("p").last_event_ms
    (5, None)
    >>> memory.rollback(); memory.view("p").last_event_ms is None
    True
    """

    def __init__(self, tickers: Mapping[str, Sequence[str]]) -> None:
        # Kept as given: a live mapping (PortfolioBook.tickers) brings portfolios added later.
        self._tickers = tickers
        self._committed: dict[str, PortfolioMemory] = {}
        self._staged: dict[str, PortfolioMemory] = {}
        self._seeds: dict[str, dict[int, PortfolioStats]] = {}

    @property
    def portfolio_ids(self) -> tuple[str, ...]:
        return tuple(self._tickers)

    def view(self, portfolio_id: str) -> PortfolioMemory:
        """The memory a decision for ``portfolio_id`` starts from (staged, else committed)."""
        staged = self._staged.get(portfolio_id)
        return staged if staged is not None else self.committed(portfolio_id)

    def committed(self, portfolio_id: str) -> PortfolioMemory:
        return self._committed.get(portfolio_id, PortfolioMemory())

    def stage(self, portfolio_id: str, memory: PortfolioMemory) -> None:
        self._staged[portfolio_id] = memory

    @property
    def has_staged(self) -> bool:
        return bool(self._staged)

    def commit(self) -> None:
        self._committed.update(self._staged)
        self._staged.clear()

    def rollback(self) -> None:
        self._staged.clear()

    # -- what the follower reads ------------------------------------------------------------

    # Records reach these once :class:`~.follower.MemoryReader` accepted them through the Intake
    # (decoded, valid, not from the future, keyed by and fitting their portfolio); what is left
    # here is the memory's own rule: a record older than what is held changes nothing.

    def on_event(self, event: RebalanceEvent) -> bool:
        """Apply a decision event read from the topic; True if it changed anything (an event
        not newer than the last one, or of an unknown decision, changes nothing)."""
        if event.portfolio_id not in self._tickers:
            return False
        updated = self.committed(event.portfolio_id).after_event(event)
        if updated is None:
            return False
        self._committed[event.portfolio_id] = updated
        return True

    def on_weights(self, weights: Weights) -> bool:
        """Apply accepted weights read from the topic; True if they changed anything. Weights
        older than those held are ignored, as the job ignores them (stale)."""
        if weights.portfolio_id not in self._tickers:
            return False
        updated = self.committed(weights.portfolio_id).after_weights(weights)
        if updated is None:
            return False
        self._committed[weights.portfolio_id] = updated
        return True

    def on_initial_stats(self, stats: PortfolioStats) -> bool:
        """Remember accepted initial statistics (a seed) of a configured portfolio."""
        tickers = self._tickers.get(stats.portfolio_id)
        if tickers is None:
            return False
        try:
            aligned = align_stats(stats, tickers)
        except SchemaError:
            return False
        seeds = self._seeds.setdefault(stats.portfolio_id, {})
        seeds.pop(stats.timestamp, None)  # a re-sent seed replaces the older one, as in the job
        seeds[stats.timestamp] = aligned
        while len(seeds) > INITIAL_STATS_KEPT:
            del seeds[next(iter(seeds))]
        return True

    def initial_stats(self, portfolio_id: str, timestamp: int) -> PortfolioStats | None:
        """The seed of ``portfolio_id`` stamped ``timestamp``, if one was read."""
        return self._seeds.get(portfolio_id, {}).get(timestamp)
