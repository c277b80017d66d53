"""The rebalance policy: a pure, deterministic decision per metrics update (SEMANTICS §7).

:meth:`RebalancePolicy.decide` takes the current statistics, weights, time and the policy's own
small state, and returns a :class:`Hold` or :class:`Rebalance` plus the next state. Nothing is
read from clocks or global state, so the same inputs always give the same decision, whichever
rebalancer instance makes it.

The rules, in order:

1. **Trigger.** The Sharpe ratio of the current weights is below ``sharpe_threshold``.
2. **Hysteresis.** After a decision the policy is *disarmed*; it re-arms once the Sharpe ratio
   leaves the band around the last decision: above ``threshold + band``, or below the Sharpe
   expected at the last decision minus ``band`` (things got materially worse). An attempt that
   found nothing worth doing also re-arms after the cool-down, since the statistics move on.
3. **Cool-down.** At least ``cooldown_ms`` since the last attempt.
4. **Warm-up.** At least ``min_observations`` observations in the statistics.
5. **Improvement.** The optimised weights, moved at most ``max_turnover`` from the current ones,
   must improve the objective's own score by at least ``min_improvement``.

The optimiser is the portfolio's ``objective`` (:data:`OBJECTIVES`): ``max_sharpe`` (the
default: max-Sharpe + L2; min-volatility when no asset beats the risk-free rate), whose score is
the expected Sharpe ratio; ``min_volatility`` and ``efficient_return`` (the least risk for
``target_return``), scored by the fall in annual volatility; ``efficient_risk`` (the most return
for ``target_volatility``), scored by the rise in annual expected return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias

import numpy as np

from streamfolio.core.metrics import PortfolioPerformance, portfolio_performance
from streamfolio.core.optimize import (
    OptimizationResult,
    efficient_return,
    efficient_risk,
    max_sharpe,
    min_volatility,
)
from streamfolio.core.types import ArrayLike, FloatArray

Objective: TypeAlias = Literal["max_sharpe", "min_volatility", "efficient_risk", "efficient_return"]
OBJECTIVES: tuple[Objective, ...] = (
    "max_sharpe",
    "min_volatility",
    "efficient_risk",
    "efficient_return",
)
"""What the policy optimises when it rebalances."""


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Per-portfolio knobs of the rebalance policy."""

    sharpe_threshold: float = 0.5
    band: float = 0.05
    cooldown_ms: int = 300_000
    min_improvement: float = 0.05
    max_turnover: float = 1.0
    """One-way turnover cap, ``½·Σ|w_new − w_old|`` (1.0 = no cap)."""
    min_observations: int = 20
    risk_free_rate: float = 0.0
    periods_per_year: float = 252.0
    gamma: float = 0.0
    """L2 regularisation in annual units, as PyPortfolioOpt's ``L2_reg``."""
    bounds: tuple[tuple[float, float], ...] | tuple[float, float] = (0.0, 1.0)
    objective: Objective = "max_sharpe"
    target_volatility: float | None = None
    """Annual volatility for ``efficient_risk``."""
    target_return: float | None = None
    """Annual expected return for ``efficient_return``."""

    def optimise(self, mean: FloatArray, covariance: FloatArray) -> OptimizationResult:
        """The configured objective's weights for per-bar ``mean`` and ``covariance``."""
        q = self.periods_per_year
        mu, sigma = mean * q, covariance * q
        if self.objective == "min_volatility":
            return min_volatility(sigma, gamma=self.gamma, bounds=self.bounds)
        if self.objective == "efficient_risk":
            target = math.nan if self.target_volatility is None else self.target_volatility
            return efficient_risk(
                mu, sigma, target, self.gamma, self.bounds, risk_free_rate=self.risk_free_rate
            )
        if self.objective == "efficient_return":
            target = math.nan if self.target_return is None else self.target_return
            return efficient_return(
                mu, sigma, target, self.gamma, self.bounds, risk_free_rate=self.risk_free_rate
            )
        return max_sharpe(mu, sigma, self.risk_free_rate, self.gamma, self.bounds)

    def gain(self, before: PortfolioPerformance, after: PortfolioPerformance) -> float:
        """How much ``after`` improves on ``before`` in the objective's own score.

        >>> from streamfolio.core.metrics import PortfolioPerformance
        >>> before = PortfolioPerformance(0.0, 0.0, 0.08, 0.20, 0.3, 252, 0.0)
        >>> after = PortfolioPerformance(0.0, 0.0, 0.07, 0.15, 0.4, 252, 0.0)
        >>> [round(PolicySettings(objective=o).gain(before, after), 6) for o in OBJECTIVES]
        [0.1, 0.05, -0.01, 0.05]
        """
        if self.objective in ("min_volatility", "efficient_return"):
            return before.risk - after.risk
        if self.objective == "efficient_risk":
            return after.expected_return - before.expected_return
        return after.sharpe - before.sharpe


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy remembers between decisions of one portfolio."""

    armed: bool = True
    last_attempt_ms: int | None = None
    last_decision_sharpe: float | None = None
    last_attempt_held: bool = False
    """The last attempt found nothing worth doing, so it may retry after the cool-down."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Keep the current weights."""

    reason: str
    sharpe: float
    notify: bool = False
    """True when the owner should hear of it: below threshold and nothing feasible helps."""


@dataclass(frozen=True, slots=True, eq=False)
class Rebalance:
    """Move to ``weights``."""

    reason: str
    weights: FloatArray = field(repr=False)
    sharpe_before: float
    sharpe_after: float
    expected_return_after: float
    risk_after: float
    turnover: float
    optimizer_status: str


Decision: TypeAlias = Hold | Rebalance


def turnover(old: ArrayLike, new: ArrayLike) -> float:
    """One-way turnover ``½·Σ|new − old|``.

    >>> turnover([0.5, 0.5], [0.8, 0.2])
    0.3
    """
    return round(0.5 * float(np.abs(np.asarray(new) - np.asarray(old)).sum()), 15)


def cap_turnover(old: ArrayLike, target: ArrayLike, max_turnover: float) -> FloatArray:
    """Move from ``old`` toward ``target`` no further than ``max_turnover``.

    The result lies on the segment between the two, so it keeps their sum and bounds.

    >>> cap_turnover([0.5, 0.5], [0.9, 0.1], 0.2).tolist()
    [0.7, 0.3]
    """
    w_old = np.asarray(old, dtype=np.float64)
    w_target = np.asarray(target, dtype=np.float64)
    moved = turnover(w_old, w_target)
    if moved <= max_turnover or moved == 0.0:
        return w_target.copy()
    step = max_turnover / moved
    result: FloatArray = w_old + step * (w_target - w_old)
    return result


class RebalancePolicy:
    """Decides Hold or Rebalance for one portfolio's metrics update.

    Examples
    --------
    >>> import numpy as np
    >>> policy = RebalancePolicy(PolicySettings(sharpe_threshold=1.0, min_observations=2,
    ...                                         periods_per_year=252, cooldown_ms=0))
    >>> mean = np.array([0.0010, -0.0002])                 # per bar
    >>> cov = np.array([[1e-4, 0.0], [0.0, 1e-4]])
    >>> decision, state = policy.decide(mean=mean, covariance=cov, count=100,
    ...                                 weights=np.array([0.2, 0.8]), now_ms=0, state=PolicyState())
    >>> type(decision).__name__, decision.weights.round(2).tolist()
    ('Rebalance', [1.0, 0.0])
    >>> policy.decide(mean=mean, covariance=cov, count=100, weights=decision.weights,
    ...               now_ms=1, state=state)[0].reason
    'sharpe 1.59 at or above threshold 1.00'
    """

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings

    def decide(
        self,
        *,
        mean: ArrayLike,
        covariance: ArrayLike,
        count: int,
        weights: ArrayLike,
        now_ms: int,
        state: PolicyState,
    ) -> tuple[Decision, PolicyState]:
        s = self.settings
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(mean, dtype=np.float64)
        sigma = np.asarray(covariance, dtype=np.float64)
        before = portfolio_performance(
            w, mu, sigma, periods_per_year=s.periods_per_year, risk_free_rate=s.risk_free_rate
        )
        sharpe = before.sharpe
        if not math.isfinite(sharpe):
            return Hold("sharpe ratio undefined (zero risk)", sharpe), state

        if not state.armed and self._may_rearm(sharpe, now_ms, state):
            state = replace(state, armed=True)
        if sharpe >= s.sharpe_threshold:
            return Hold(
                f"sharpe {sharpe:.2f} at or above threshold {s.sharpe_threshold:.2f}", sharpe
            ), state
        if not state.armed:
            return Hold("inside the hysteresis band since the last decision", sharpe), state
        if state.last_attempt_ms is not None and now_ms - state.last_attempt_ms < s.cooldown_ms:
            return Hold("cooling down", sharpe), state
        if count < s.min_observations:
            return Hold(f"warming up ({count} of {s.min_observations} observations)", sharpe), state

        attempted = PolicyState(
            armed=False, last_attempt_ms=now_ms, last_decision_sharpe=sharpe, last_attempt_held=True
        )
        result = s.optimise(mu, sigma)
        if not result.solved or result.weights is None:
            return Hold(f"no feasible weights: {result.message}", sharpe, notify=True), attempted
        target = cap_turnover(w, result.weights, s.max_turnover)
        after = portfolio_performance(
            target, mu, sigma, periods_per_year=s.periods_per_year, risk_free_rate=s.risk_free_rate
        )
        gain = s.gain(before, after)
        if not (gain >= s.min_improvement):
            reason = f"best expected gain {gain:.3f} is below the minimum {s.min_improvement:.3f}"
            return Hold(reason, sharpe, notify=True), attempted
        return (
            Rebalance(
                reason=f"sharpe {sharpe:.2f} below threshold {s.sharpe_threshold:.2f}",
                weights=target,
                sharpe_before=sharpe,
                sharpe_after=after.sharpe,
                expected_return_after=after.expected_return,
                risk_after=after.risk,
                turnover=turnover(w, target),
                optimizer_status=result.status.value,
            ),
            replace(attempted, last_decision_sharpe=after.sharpe, last_attempt_held=False),
        )

    def _may_rearm(self, sharpe: float, now_ms: int, state: PolicyState) -> bool:
        s = self.settings
        if sharpe > s.sharpe_threshold + s.band:
            return True
        if (
            state.last_attempt_held
            and state.last_attempt_ms is not None
            and now_ms - state.last_attempt_ms >= s.cooldown_ms
        ):
            return True
        last = state.last_decision_sharpe
        return last is not None and sharpe < last - s.band
