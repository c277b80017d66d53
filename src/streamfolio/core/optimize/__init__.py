"""Long-only mean-variance optimisation, exact and scipy-only, matching PyPortfolioOpt.

The public names live here: :func:`max_sharpe` and :func:`min_volatility` (the objectives, in
:mod:`~streamfolio.core.optimize.objectives`), :class:`OptimizationResult`,
:class:`OptimizationStatus` and :data:`Bounds` (in :mod:`~streamfolio.core.optimize.result`).
The inputs are checked and the covariance factorised in :mod:`~streamfolio.core.optimize.problem`,
and both objectives are solved by one exact least-distance program
(:mod:`~streamfolio.core.optimize.least_distance`, which explains the method).
"""

from __future__ import annotations

from streamfolio.core.optimize.objectives import max_sharpe, min_volatility
from streamfolio.core.optimize.result import Bounds, OptimizationResult, OptimizationStatus

__all__ = [
    "Bounds",
    "OptimizationResult",
    "OptimizationStatus",
    "max_sharpe",
    "min_volatility",
]
