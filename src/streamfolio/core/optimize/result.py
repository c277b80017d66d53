"""What an optimisation returns: the weights, a status saying why, and their performance.

:class:`OptimizationResult` and :class:`OptimizationStatus` are the public outcome of every
objective in :mod:`streamfolio.core.optimize`; :data:`Bounds` is the weight-bounds argument they
share; :func:`no_solution` builds the result of a problem without a solution.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from streamfolio.core.types import FloatArray

Bounds: TypeAlias = (
    tuple[float, float] | Sequence[tuple[float, float]] | tuple[FloatArray, FloatArray]
)
"""Weight bounds, in one of three forms (as PyPortfolioOpt's ``weight_bounds``):

- a ``(lo, hi)`` pair of numbers for every asset;
- a sequence (or ``(n, 2)`` array) of one ``(lo, hi)`` pair per asset;
- a pair of numpy arrays ``(lo_array, hi_array)``, each of shape ``(n,)``.

The third form must be numpy arrays: with two assets, ``([0, 0], [1, 1])`` written as lists reads
as per-asset pairs ``(0, 0)`` and ``(1, 1)``, as it does in PyPortfolioOpt."""


class OptimizationStatus(enum.StrEnum):
    """What an optimisation produced, declared from least to most severe.

    :attr:`OptimizationResult.status` is the most severe that applies; all of them are in
    :attr:`OptimizationResult.flags`.
    """

    OPTIMAL = "optimal"
    """The requested problem was solved as posed."""
    COVARIANCE_REPAIRED = "covariance_repaired"
    """``Σ + γI`` was not positive definite (or singular to working precision); the eigenvalues
    of ``Σ`` were clipped to a small positive floor first, like PyPortfolioOpt's
    ``fix_nonpositive_semidefinite`` 'spectral' method."""
    MIN_VOLATILITY_FALLBACK = "min_volatility_fallback"
    """No feasible portfolio beats the risk-free rate, so the maximum Sharpe ratio does not exist;
    the weights are the minimum-volatility portfolio."""
    INFEASIBLE = "infeasible"
    """No weights satisfy the bounds (``Σlo > 1`` or ``Σhi < 1``) or the solver failed; the weights
    are ``fallback_weights`` or ``None``."""
    INVALID_INPUT = "invalid_input"
    """The inputs hold NaN or infinite values or the covariance is not symmetric; the weights are
    ``fallback_weights`` or ``None``."""


SEVERITY = tuple(OptimizationStatus)
"""Statuses from least to most severe, in declaration order."""
_SOLVED = frozenset(
    {
        OptimizationStatus.OPTIMAL,
        OptimizationStatus.COVARIANCE_REPAIRED,
        OptimizationStatus.MIN_VOLATILITY_FALLBACK,
    }
)


@dataclass(frozen=True, eq=False)
class OptimizationResult:
    """The weights an optimiser chose, why, and their annual performance.

    ``expected_return``, ``volatility`` and ``sharpe`` are computed from the inputs (``Σ``
    without ``γI``; the repaired ``Σ`` when it was repaired). They are NaN for
    ``INFEASIBLE`` and ``INVALID_INPUT``, and ``expected_return`` and ``sharpe`` are NaN for
    :func:`min_volatility`, which is given no expected returns.
    """

    weights: FloatArray | None
    """Portfolio weights (read-only), summing to 1 within the bounds; ``None`` if there are none."""
    status: OptimizationStatus
    """The most severe entry of :attr:`flags`."""
    message: str
    """What happened, in words, for logs and alerts."""
    expected_return: float = math.nan
    """Annual expected return ``wᵀμ``."""
    volatility: float = math.nan
    """Annual volatility ``√(wᵀΣw)``."""
    sharpe: float = math.nan
    """``(wᵀμ − r_f) / √(wᵀΣw)``; NaN when the volatility is zero."""
    flags: frozenset[OptimizationStatus] = field(default_factory=frozenset)
    """Every condition met on the way, :attr:`status` included, e.g. a repaired covariance and a
    min-volatility fallback together."""

    @property
    def solved(self) -> bool:
        """Whether :attr:`weights` come from the solver rather than from ``fallback_weights``."""
        return self.status in _SOLVED

    @property
    def covariance_repaired(self) -> bool:
        """Whether the covariance had to be repaired before solving."""
        return OptimizationStatus.COVARIANCE_REPAIRED in self.flags


def no_solution(
    status: OptimizationStatus,
    reason: str,
    fallback: FloatArray | None,
    flags: frozenset[OptimizationStatus] = frozenset(),
) -> OptimizationResult:
    """A result without solved weights: ``fallback`` (made read-only) or ``None``."""
    if fallback is not None:
        fallback.setflags(write=False)
        reason += "; returned fallback_weights"
    return OptimizationResult(
        weights=fallback, status=status, message=reason, flags=flags | {status}
    )
