"""Checks of the Black-Litterman inputs: square covariance, vector sizes, picking matrix, ``τ``.

Each returns the input as a float array (or number) or raises
:class:`~streamfolio.errors.OptimizationError` naming what does not fit.
"""

from __future__ import annotations

import numpy as np

from streamfolio.core.types import ArrayLike, FloatArray
from streamfolio.errors import OptimizationError


def checked_tau(tau: float) -> float:
    if not 0.0 < tau <= 1.0:
        raise OptimizationError(f"tau must lie in (0, 1], got {tau!r}")
    return float(tau)


def as_covariance(covariance: ArrayLike) -> FloatArray:
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise OptimizationError(f"covariance must be a non-empty square matrix, got {cov.shape}")
    return cov


def as_vector(values: ArrayLike, name: str, size: int) -> FloatArray:
    vector = np.asarray(values, dtype=np.float64).ravel()
    if vector.size != size:
        raise OptimizationError(f"{name} has {vector.size} entries, expected {size}")
    return vector


def as_picking(P: ArrayLike, n_assets: int) -> FloatArray:
    picking = np.asarray(P, dtype=np.float64)
    if picking.ndim == 1:
        picking = picking[np.newaxis, :]
    if picking.ndim != 2 or picking.shape[1] != n_assets:
        raise OptimizationError(f"P has shape {picking.shape}, expected (k, {n_assets})")
    return picking
