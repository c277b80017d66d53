"""Validating an optimisation problem: shapes, bounds, the ridge covariance and its factor.

:func:`prepare` checks what every objective shares (covariance, ``γ``, bounds, fallback
weights) and returns a :class:`Problem` ready for the least-distance solver, or an
:class:`~streamfolio.core.optimize.result.OptimizationResult` when there is nothing to solve
(NaN inputs, an asymmetric covariance, infeasible bounds). Malformed calls raise
:class:`~streamfolio.errors.OptimizationError`; a covariance that is not positive definite is
repaired by clipping its eigenvalues, as PyPortfolioOpt's 'spectral' fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamfolio.core.optimize.result import (
    Bounds,
    OptimizationResult,
    OptimizationStatus,
    no_solution,
)
from streamfolio.core.types import ArrayLike, FloatArray
from streamfolio.errors import OptimizationError

_EIGENVALUE_FLOOR_RELATIVE = 1e-10
"""Repaired eigenvalues are at least this fraction of the largest one: PyPortfolioOpt clips to 0,
but the Cholesky factor needs a strictly positive spectrum."""
_EIGENVALUE_FLOOR_ABSOLUTE = 1e-12
"""The floor when no eigenvalue is positive (e.g. an all-zero covariance of constant prices)."""
_SYMMETRY_TOLERANCE = 1e-8
"""Asymmetry beyond this fraction of the largest entry means the matrix is not a covariance."""
_SINGLE_POINT_TOLERANCE = 1e-9
"""When the bounds sum to 1 within this, they admit exactly one portfolio."""


@dataclass(frozen=True)
class Problem:
    """A validated problem: the covariance to report with and the factor of ``Σ + γI``."""

    covariance: FloatArray
    ridge_cholesky: FloatArray
    lower: FloatArray
    upper: FloatArray
    fallback: FloatArray | None
    single_point: FloatArray | None
    flags: frozenset[OptimizationStatus]
    notes: tuple[str, ...]


def prepare(
    covariance: ArrayLike,
    gamma: float,
    bounds: Bounds,
    n_assets: int,
    fallback_weights: ArrayLike | None,
) -> Problem | OptimizationResult:
    """Validate the shared inputs; a result instead of a problem when there is nothing to solve."""
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (n_assets, n_assets):
        raise OptimizationError(
            f"covariance has shape {cov.shape}, expected ({n_assets}, {n_assets}) to match "
            f"the {n_assets} expected returns"
        )
    if not (math.isfinite(gamma) and gamma >= 0.0):
        raise OptimizationError(f"gamma must be a finite number >= 0, got {gamma!r}")
    lower, upper = _parse_bounds(bounds, n_assets)
    fallback = None
    if fallback_weights is not None:
        fallback = as_vector(fallback_weights, "fallback_weights").copy()
        if fallback.size != n_assets:
            raise OptimizationError(
                f"fallback_weights has {fallback.size} entries, expected {n_assets}"
            )
    if not np.all(np.isfinite(cov)):
        return no_solution(
            OptimizationStatus.INVALID_INPUT, "covariance is NaN or infinite", fallback
        )
    asymmetry = float(np.max(np.abs(cov - cov.T)))
    if asymmetry > _SYMMETRY_TOLERANCE * max(float(np.max(np.abs(cov))), 1e-300):
        return no_solution(
            OptimizationStatus.INVALID_INPUT,
            f"covariance is not symmetric (max |Σ − Σᵀ| = {asymmetry:.3g})",
            fallback,
        )
    infeasibility = _bounds_infeasibility(lower, upper)
    if infeasibility is not None:
        return no_solution(OptimizationStatus.INFEASIBLE, infeasibility, fallback)
    # Rounding leaves Σ asymmetric in the last bits; the Cholesky factor only reads one triangle.
    cov = (cov + cov.T) / 2.0
    factorised = _factorise_ridge(cov, gamma)
    if factorised is None:
        return no_solution(
            OptimizationStatus.INVALID_INPUT,
            "covariance + gamma·I could not be factorised even after repairing its eigenvalues",
            fallback,
        )
    cov, cholesky, repair_note = factorised
    flags = frozenset({OptimizationStatus.COVARIANCE_REPAIRED} if repair_note else ())
    return Problem(
        covariance=cov,
        ridge_cholesky=cholesky,
        lower=lower,
        upper=upper,
        fallback=fallback,
        single_point=_single_feasible_point(lower, upper),
        flags=flags,
        notes=(repair_note,) if repair_note else (),
    )


def as_vector(values: ArrayLike, name: str) -> FloatArray:
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise OptimizationError(f"{name} must be a non-empty 1-D array, got shape {vector.shape}")
    return vector


def square_size(matrix: ArrayLike) -> int:
    shape = np.shape(matrix)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise OptimizationError(f"covariance must be a non-empty square matrix, got shape {shape}")
    return int(shape[0])


def _parse_bounds(bounds: Bounds, n_assets: int) -> tuple[FloatArray, FloatArray]:
    """Read the bounds (see :data:`Bounds`) into arrays ``lower`` and ``upper``."""
    expected = (
        f"bounds must be a (lo, hi) pair, {n_assets} (lo, hi) pairs or a pair of numpy arrays "
        f"of shape ({n_assets},)"
    )
    # Checked first: with two assets a pair of arrays would otherwise read as two (lo, hi) rows.
    if isinstance(bounds, tuple | list) and len(bounds) == 2:
        first, second = bounds[0], bounds[1]
        if isinstance(first, np.ndarray) and isinstance(second, np.ndarray):
            if first.shape != (n_assets,) or second.shape != (n_assets,):
                raise OptimizationError(
                    f"{expected}; got arrays of shapes {first.shape} and {second.shape}"
                )
            try:
                return _checked_bounds(first.astype(np.float64), second.astype(np.float64))
            except (TypeError, ValueError) as exc:
                raise OptimizationError(f"{expected}, got {bounds!r}") from exc
    try:
        table = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise OptimizationError(f"{expected}, got {bounds!r}") from exc
    if table.shape == (n_assets, 2):
        return _checked_bounds(table[:, 0].copy(), table[:, 1].copy())
    if table.shape == (2,):
        return _checked_bounds(np.full(n_assets, table[0]), np.full(n_assets, table[1]))
    raise OptimizationError(f"{expected}; got shape {table.shape}")


def _checked_bounds(lower: FloatArray, upper: FloatArray) -> tuple[FloatArray, FloatArray]:
    if not np.all(np.isfinite(lower)) or np.any(np.isnan(upper)):
        raise OptimizationError("lower bounds must be finite and upper bounds must not be NaN")
    if np.any(lower < 0.0):
        raise OptimizationError(f"lower bounds must be >= 0 (long-only), got min {lower.min():.6g}")
    if np.any(lower > upper):
        raise OptimizationError("every lower bound must be <= its upper bound")
    # No weight can exceed 1 in a long-only portfolio, so larger caps do not bind.
    return lower, np.minimum(upper, 1.0)


def _bounds_infeasibility(lower: FloatArray, upper: FloatArray) -> str | None:
    lower_sum, upper_sum = float(lower.sum()), float(upper.sum())
    if lower_sum > 1.0 + _SINGLE_POINT_TOLERANCE:
        return f"the lower bounds sum to {lower_sum:.6g} > 1: no weights satisfy them"
    if upper_sum < 1.0 - _SINGLE_POINT_TOLERANCE:
        return f"the upper bounds sum to {upper_sum:.6g} < 1: no weights satisfy them"
    return None


def _single_feasible_point(lower: FloatArray, upper: FloatArray) -> FloatArray | None:
    """The only feasible weights when the bounds sum to 1, else ``None``.

    The homogenised program needs ``Σlo < 1`` to keep ``1ᵀy`` positive, so this case is handled
    apart.
    """
    only: FloatArray
    if lower.sum() >= 1.0 - _SINGLE_POINT_TOLERANCE:
        only = lower / lower.sum()
    elif upper.sum() <= 1.0 + _SINGLE_POINT_TOLERANCE:
        only = upper / upper.sum()
    else:
        return None
    return only


def _factorise_ridge(cov: FloatArray, gamma: float) -> tuple[FloatArray, FloatArray, str] | None:
    """``(Σ, Cholesky factor of Σ + γI, note)``, with ``Σ`` repaired if needed (else no note).

    ``None`` if even the repaired matrix cannot be factorised (extreme magnitudes).
    """
    ridge = cov + gamma * np.eye(cov.shape[0])
    try:
        cholesky = np.linalg.cholesky(ridge)
    except np.linalg.LinAlgError:
        pass
    else:
        # Squared pivots bound the spectrum from inside, so a tiny ratio proves the matrix is
        # singular to working precision, and the solver would then divide by noise.
        pivots = np.diag(cholesky)
        if pivots.min() ** 2 >= _EIGENVALUE_FLOOR_RELATIVE * pivots.max() ** 2:
            return cov, cholesky, ""
    try:
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
    except np.linalg.LinAlgError:
        return None
    largest = float(eigenvalues[-1])
    floor = _EIGENVALUE_FLOOR_RELATIVE * largest if largest > 0 else _EIGENVALUE_FLOOR_ABSOLUTE
    repaired = (eigenvectors * np.maximum(eigenvalues, floor)) @ eigenvectors.T
    repaired = (repaired + repaired.T) / 2.0
    note = (
        f"covariance + gamma·I was not numerically positive definite (smallest eigenvalue of Σ "
        f"{eigenvalues[0]:.3g}); eigenvalues clipped to {floor:.3g}"
    )
    try:
        return repaired, np.linalg.cholesky(repaired + gamma * np.eye(cov.shape[0])), note
    except np.linalg.LinAlgError:
        return None
