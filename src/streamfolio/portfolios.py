"""From configured portfolios to the analytics core's inputs (one place, used by every engine)."""

from __future__ import annotations

from streamfolio.config.portfolio import PortfolioSettings
from streamfolio.config.sections import ExchangeSettings
from streamfolio.core.policy import PolicySettings as CorePolicySettings
from streamfolio.core.portfolio import PortfolioSpec


def portfolio_spec(portfolio: PortfolioSettings, exchange: ExchangeSettings) -> PortfolioSpec:
    """The streaming view of a configured portfolio."""
    return PortfolioSpec(
        portfolio_id=portfolio.id,
        tickers=tuple(portfolio.tickers),
        bar_ms=portfolio.bar_seconds * 1000,
        periods_per_year=portfolio.periods_per_year_value(exchange),
        risk_free_rate=portfolio.risk_free_rate,
        estimator=portfolio.estimator.kind,
        half_life_bars=portfolio.estimator.half_life_bars,
        sharpe_threshold=portfolio.policy.sharpe_threshold,
        bounds=weight_bounds(portfolio),
    )


def weight_bounds(portfolio: PortfolioSettings) -> tuple[tuple[float, float], ...]:
    """Per-asset ``(lo, hi)`` in ticker order."""
    return tuple(portfolio.bounds.interval(t) for t in portfolio.tickers)


def policy_settings(portfolio: PortfolioSettings, exchange: ExchangeSettings) -> CorePolicySettings:
    """The rebalance policy of a configured portfolio."""
    policy = portfolio.policy
    return CorePolicySettings(
        sharpe_threshold=policy.sharpe_threshold,
        band=policy.band,
        cooldown_ms=int(policy.cooldown_seconds * 1000),
        min_improvement=policy.min_improvement,
        max_turnover=policy.max_turnover,
        min_observations=policy.min_observations,
        risk_free_rate=portfolio.risk_free_rate,
        periods_per_year=portfolio.periods_per_year_value(exchange),
        gamma=portfolio.gamma,
        bounds=weight_bounds(portfolio),
        objective=portfolio.objective.kind,
        target_volatility=portfolio.objective.target_volatility,
        target_return=portfolio.objective.target_return,
    )
