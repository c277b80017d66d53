"""The rebalancer's decisions, without Kafka: metrics, statistics and memory in, an outcome out.

:class:`Decider` judges a metrics or statistics record read from its topic (through
:class:`~streamfolio.intake.Intake` and the rebalancer's own rules: a metrics record must name its
statistics; statistics are put in the portfolio's ticker order and must be of its bar size) and,
given a portfolio's metrics record, the statistics it was computed from and the portfolio's
:class:`~streamfolio.rebalancer.memory.PortfolioMemory`, asks the core
:class:`~streamfolio.core.policy.RebalancePolicy` and says what to publish (an :class:`Outcome`).
Decisions use event time only (``now`` is the metrics timestamp) and the memory rebuilt from the
output topics, so a restarted or second instance decides the same way. Metrics not newer than the
portfolio's last decision event are not decided again; metrics computed with other weights than
those in force, or older than them, are ``stale`` (weights stamped before those in force would be
ignored by the job).

The portfolios and their policies are those of a :class:`~streamfolio.portfolio_book.PortfolioBook`
(the configured ones plus the definitions topic): a metrics record stamped at the end of a bar is
decided by the definition in force for that bar (its policy, bounds, objective, risk-free rate and
notify targets), and one of a portfolio removed before that bar is not decided (``removed``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from streamfolio.config import PortfolioSettings, Settings
from streamfolio.core.metrics import portfolio_performance
from streamfolio.core.policy import Rebalance, RebalancePolicy
from streamfolio.core.portfolio import check_weights
from streamfolio.errors import OptimizationError, SchemaError
from streamfolio.intake import Intake, Rejected
from streamfolio.messages import PortfolioMetrics, PortfolioStats, RebalanceEvent, Weights
from streamfolio.portfolio_book import PortfolioBook
from streamfolio.portfolios import policy_settings, weight_bounds
from streamfolio.rebalancer.memory import (
    DECISION_HOLD,
    DECISION_REARM,
    DECISION_REBALANCE,
    SOURCE,
    PortfolioMemory,
    align_stats,
    same_weights,
    state_after,
)
from streamfolio.rebalancer.notify import Notification, notification_for

__all__ = ["Decider", "Outcome", "OutcomeKind"]

log = logging.getLogger(__name__)

OutcomeKind = Literal[
    "rebalance", "hold", "rearm", "unchanged", "stale", "already_decided", "removed"
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a metrics record led to, and the portfolio's memory after it.

    ``kind``: ``rebalance`` (weights and an event), ``hold`` (an event: an attempt found nothing
    worth doing), ``rearm`` (an event: the policy re-armed), ``unchanged`` (nothing to publish),
    ``stale`` (computed with weights the portfolio no longer has), ``already_decided``
    (not newer than the portfolio's last decision) or ``removed`` (the portfolio was removed
    before its bar).
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
    ``clock``), to refuse what is stamped in the future. The portfolios are those of ``book``
    (default: the configured ones); the default intake judges by the book's portfolios.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        intake: Intake | None = None,
        clock: Callable[[], int] | None = None,
        book: PortfolioBook | None = None,
    ) -> None:
        self.settings = settings
        self.book = book if book is not None else PortfolioBook(settings)
        if intake is None:
            base = (
                Intake.from_settings(settings)
                if clock is None
                else Intake.from_settings(settings, clock=clock)
            )
            intake = replace(base, portfolios=self.book.specs)
        if intake.portfolios is None:
            # A programming error of the caller (the service builds its intake from settings).
            raise ValueError("the intake must judge the portfolios")
        self.intake = intake
        # One policy per definition (a definition's settings object is never changed).
        self._policies: dict[int, tuple[PortfolioSettings, RebalancePolicy]] = {}

    @property
    def portfolio_ids(self) -> tuple[str, ...]:
        """The portfolios in force now (removed ones left out)."""
        return self.book.ids()

    def tickers(self, portfolio_id: str) -> tuple[str, ...]:
        """The tickers of the newest definition of ``portfolio_id`` (removed or not)."""
        return self.book.tickers[portfolio_id]

    def _policy(self, portfolio: PortfolioSettings) -> RebalancePolicy:
        known = self._policies.get(id(portfolio))
        if known is None or known[0] is not portfolio:
            known = (portfolio, RebalancePolicy(policy_settings(portfolio, self.settings.exchange)))
            self._policies[id(portfolio)] = known
        return known[1]

    def _defined(self, portfolio_id: str, timestamp: int) -> PortfolioSettings:
        """The definition in force for the bar ending at ``timestamp``, else the newest (a
        record the intake accepted is of a portfolio the book knows)."""
        portfolio = self.book.for_bar(portfolio_id, timestamp)
        if portfolio is None:
            portfolio = self.book.last_defined(portfolio_id)
        assert portfolio is not None, portfolio_id
        return portfolio

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
        portfolio = self._defined(stats.portfolio_id, stats.timestamp)
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

    @staticmethod
    def already_decided(metrics: PortfolioMetrics, memory: PortfolioMemory) -> bool:
        """Whether ``metrics`` is not newer than the portfolio's last decision: it was decided
        (or is a replay of a record that was), and deciding again could only repeat it."""
        return memory.last_event_ms is not None and metrics.timestamp <= memory.last_event_ms

    def decide(
        self, metrics: PortfolioMetrics, stats: PortfolioStats, memory: PortfolioMemory
    ) -> Outcome:
        """The outcome of ``metrics`` (with the statistics it names) for a portfolio that
        remembers ``memory``. ``stats`` must be in the portfolio's ticker order.

        Raises :class:`~streamfolio.errors.OptimizationError` if the policy proposes weights the
        job would reject (outside the portfolio's bounds).
        """
        pid = metrics.portfolio_id
        portfolio = self.book.for_bar(pid, metrics.timestamp)
        if portfolio is None:
            return Outcome("removed", memory, detail=f"{pid} is not defined for this bar")
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
        if stats.timestamp != metrics.stats_timestamp:
            # A programming error: the join hands over the named statistics.
            raise ValueError("decide() needs the statistics the metrics name")
        tickers = portfolio.tickers
        if stats.tickers != tickers or set(metrics.weights) != set(tickers):
            try:
                stats = align_stats(stats, tickers)
            except SchemaError:
                return Outcome(
                    "stale",
                    memory,
                    detail="statistics or weights of other tickers than the definition in force",
                )
            if set(metrics.weights) != set(tickers):
                return Outcome("stale", memory, detail="weights of other tickers than in force")
        mean, covariance = stats.mean_vector(), stats.covariance_matrix()
        current = np.array([metrics.weights[t] for t in tickers], dtype=np.float64)
        decision, state = self._policy(portfolio).decide(
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
            problem = check_weights(tickers, new, weight_bounds(portfolio))
            if problem is not None:  # the optimiser's contract; never publish what the job rejects
                raise OptimizationError(
                    f"the policy proposed weights the job would reject: {problem}"
                )
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
            periods_per_year=portfolio.periods_per_year_value(self.settings.exchange),
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
