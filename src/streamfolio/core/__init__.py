"""The analytics core: returns, online moments, metrics, optimisation, Black-Litterman, policy.

Plain numpy/scipy. Nothing here imports Kafka, Flink, Avro, pandas or does I/O, so every engine
(the offline replay, the Flink job, the rebalancer) calls the same code.
"""

from __future__ import annotations

from streamfolio.core.black_litterman import (
    BlackLittermanPosterior,
    black_litterman,
    black_litterman_weights,
    market_implied_prior_returns,
    market_implied_risk_aversion,
)
from streamfolio.core.metrics import (
    PortfolioPerformance,
    expected_return,
    portfolio_performance,
    sharpe_ratio,
    sharpe_standard_error,
    volatility,
)
from streamfolio.core.moments import EWMoments, OnlineMoments, WelfordMoments
from streamfolio.core.optimize import (
    OptimizationResult,
    OptimizationStatus,
    max_sharpe,
    min_volatility,
)
from streamfolio.core.policy import Hold, PolicySettings, PolicyState, Rebalance, RebalancePolicy
from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.returns import BarCloses, PortfolioReturns, ReturnChain, log_returns

__all__ = [
    "BarCloses",
    "BlackLittermanPosterior",
    "EWMoments",
    "Hold",
    "OnlineMoments",
    "OptimizationResult",
    "OptimizationStatus",
    "PolicySettings",
    "PolicyState",
    "PortfolioMonitor",
    "PortfolioPerformance",
    "PortfolioReturns",
    "PortfolioSpec",
    "Rebalance",
    "RebalancePolicy",
    "ReturnChain",
    "WelfordMoments",
    "black_litterman",
    "black_litterman_weights",
    "expected_return",
    "log_returns",
    "market_implied_prior_returns",
    "market_implied_risk_aversion",
    "max_sharpe",
    "min_volatility",
    "portfolio_performance",
    "sharpe_ratio",
    "sharpe_standard_error",
    "volatility",
]
