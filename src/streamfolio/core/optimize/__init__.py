"""Long-only mean-variance optimisation, exact and scipy-only, matching PyPortfolioOpt.

The public names live here: :func:`max_sharpe` and :func:`min_volatility` (the objectives, in
:mod:`~streamfolio.core.optimize.objectives`), :func:`efficient_return` and
:func:`efficient_risk` (points on the frontier, in :mod:`~streamfolio.core.optimize.efficient`),
:class:`OptimizationResult`, :class:`OptimizationStatus` and :data:`Bounds` (in
:mod:`~streamfolio.core.optimize.result`). The inputs are checked and the covariance factorised
in :mod:`~streamfolio.core.optimize.problem`, and every objective is solved by the exact
least-distance program
(:mod:`~streamfolio.core.optimize.least_distance`, which explains the method).
"""

from __future__ import annotations

from streamfolio.core.optimize.efficient import efficient_return, efficient_risk
from streamfolio.core.optimize.objectives import max_sharpe, min_volatility
from streamfolio.core.optimize.result import Bounds, OptimizationResult, OptimizationStatus

__all__ = [
    "Bounds",
    "OptimizationResult",
    "OptimizationStatus",
    "efficient_return",
    "efficient_risk",
    "max_sharpe",
    "min_volatility",
]
