"""The analytics core: returns, online moments, metrics, optimisation, Black-Litterman, policy.

Plain numpy/scipy. Nothing here imports Kafka, Flink, Avro, pandas or does I/O, so every engine
(the offline replay, the Flink job, the rebalancer) calls the same code.

The names below are imported when first used (PEP 562), not with the package: the Flink job's
functions use the returns, moments, metrics and monitors, and importing the optimisers with
them (scipy.optimize, whose pybind11 extension initialises through ``PyGILState_Ensure``) in
one of the threads that share PyFlink's embedded interpreter could hang the job at start-up
(docs/flink.md, caveats).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from streamfolio.core.moments import (
        EWMoments,
        OnlineMoments,
        WelfordMoments,
    )
    from streamfolio.core.optimize import (
        OptimizationResult,
        OptimizationStatus,
        max_sharpe,
        min_volatility,
    )
    from streamfolio.core.policy import (
        Hold,
        PolicySettings,
        PolicyState,
        Rebalance,
        RebalancePolicy,
    )
    from streamfolio.core.portfolio import (
        PortfolioMonitor,
        PortfolioSpec,
    )
    from streamfolio.core.returns import (
        BarCloses,
        PortfolioReturns,
        ReturnChain,
        log_returns,
    )

_HOMES: dict[str, str] = {
    "BlackLittermanPosterior": "streamfolio.core.black_litterman",
    "black_litterman": "streamfolio.core.black_litterman",
    "black_litterman_weights": "streamfolio.core.black_litterman",
    "market_implied_prior_returns": "streamfolio.core.black_litterman",
    "market_implied_risk_aversion": "streamfolio.core.black_litterman",
    "PortfolioPerformance": "streamfolio.core.metrics",
    "expected_return": "streamfolio.core.metrics",
    "portfolio_performance": "streamfolio.core.metrics",
    "sharpe_ratio": "streamfolio.core.metrics",
    "sharpe_standard_error": "streamfolio.core.metrics",
    "volatility": "streamfolio.core.metrics",
    "EWMoments": "streamfolio.core.moments",
    "OnlineMoments": "streamfolio.core.moments",
    "WelfordMoments": "streamfolio.core.moments",
    "OptimizationResult": "streamfolio.core.optimize",
    "OptimizationStatus": "streamfolio.core.optimize",
    "max_sharpe": "streamfolio.core.optimize",
    "min_volatility": "streamfolio.core.optimize",
    "Hold": "streamfolio.core.policy",
    "PolicySettings": "streamfolio.core.policy",
    "PolicyState": "streamfolio.core.policy",
    "Rebalance": "streamfolio.core.policy",
    "RebalancePolicy": "streamfolio.core.policy",
    "PortfolioMonitor": "streamfolio.core.portfolio",
    "PortfolioSpec": "streamfolio.core.portfolio",
    "BarCloses": "streamfolio.core.returns",
    "PortfolioReturns": "streamfolio.core.returns",
    "ReturnChain": "streamfolio.core.returns",
    "log_returns": "streamfolio.core.returns",
}
"""Where each public name lives."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


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
