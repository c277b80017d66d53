"""Investor views for Black-Litterman: picking matrix ``P``, targets ``Q``, uncertainty ``Ω``.

- :func:`absolute_views`: ``P`` and ``Q`` for views on single assets;
- :func:`default_omega` (He & Litterman) and :func:`idzorek_omega` (percentage confidences, in
  Walters' closed form): the view uncertainty ``Ω``;
- :func:`omega_for_views`: the ``Ω`` :func:`~streamfolio.core.black_litterman.model.black_litterman`
  uses for its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from streamfolio.core.black_litterman.inputs import as_covariance, as_picking, checked_tau
from streamfolio.core.types import ArrayLike, FloatArray
from streamfolio.errors import OptimizationError

_ZERO_CONFIDENCE_OMEGA = 1e6
"""Ω for a view held with 0 % confidence: PyPortfolioOpt's stand-in for an infinite variance."""


def absolute_views(n_assets: int, views: Mapping[int, float]) -> tuple[FloatArray, FloatArray]:
    """Picking matrix ``P`` and view vector ``Q`` for views "asset i returns q_i".

    Parameters
    ----------
    n_assets : int
        Number of assets in the universe.
    views : Mapping[int, float]
        Asset index → expected return, in the units of the prior; views keep this order.

    Returns
    -------
    tuple[FloatArray, FloatArray]
        ``P`` of shape (k, n_assets) with one 1 per row, and ``Q`` of shape (k,).

    Raises
    ------
    OptimizationError
        If an index is outside ``0 … n_assets − 1``.

    Examples
    --------
    >>> P, Q = absolute_views(3, {2: 0.10, 0: 0.05})
    >>> P
    array([[0., 0., 1.],
           [1., 0., 0.]])
    >>> Q
    array([0.1 , 0.05])
    """
    picking = np.zeros((len(views), n_assets))
    targets = np.zeros(len(views))
    for row, (asset, expected) in enumerate(views.items()):
        if not 0 <= asset < n_assets:
            raise OptimizationError(f"view on asset {asset}: index outside 0..{n_assets - 1}")
        picking[row, asset] = 1.0
        targets[row] = expected
    return picking, targets


def default_omega(covariance: ArrayLike, P: ArrayLike, tau: float) -> FloatArray:
    """He & Litterman's view uncertainty, ``Ω = diag(τ·PΣPᵀ)``.

    Each view's variance is proportional to the variance of its view portfolio.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance of returns.
    P : array_like, shape (k, n)
        Picking matrix.
    tau : float
        Weight on the views, ``0 < τ ≤ 1``.

    Returns
    -------
    FloatArray
        Diagonal ``Ω``, shape (k, k).

    Examples
    --------
    >>> default_omega([[0.04, 0.01], [0.01, 0.09]], [[1.0, -1.0]], 0.05).round(4)
    array([[0.0055]])
    """
    cov = as_covariance(covariance)
    picking = as_picking(P, cov.shape[0])
    view_variances = np.einsum("ij,jk,ik->i", picking, cov, picking)
    return np.diag(checked_tau(tau) * view_variances)


def idzorek_omega(
    covariance: ArrayLike, P: ArrayLike, view_confidences: ArrayLike, tau: float
) -> FloatArray:
    """Idzorek's view uncertainty from percentage confidences (Walters' closed form).

    ``Ω_ii = τ·(1 − c_i)/c_i · p_iΣp_iᵀ``, and a very large ``Ω_ii`` for ``c_i = 0``, as
    PyPortfolioOpt's ``idzorek_method``. Unlike that method it takes no ``Π``, ``Q`` or ``δ``:
    the closed form does not use them.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance of returns.
    P : array_like, shape (k, n)
        Picking matrix.
    view_confidences : array_like, shape (k,)
        Confidence in each view, in [0, 1]; 1 makes the view certain (``Ω_ii = 0``).
    tau : float
        Weight on the views, ``0 < τ ≤ 1``.

    Returns
    -------
    FloatArray
        Diagonal ``Ω``, shape (k, k).

    Raises
    ------
    OptimizationError
        If a confidence is outside [0, 1] or their number differs from the number of views.

    Examples
    --------
    >>> idzorek_omega([[0.04, 0.01], [0.01, 0.09]], [[1.0, 0.0]], [0.5], 0.05)
    array([[0.002]])
    """
    cov = as_covariance(covariance)
    picking = as_picking(P, cov.shape[0])
    confidences = np.asarray(view_confidences, dtype=np.float64).ravel()
    if confidences.shape != (picking.shape[0],):
        raise OptimizationError(
            f"view_confidences has {confidences.size} entries, expected one per view "
            f"({picking.shape[0]})"
        )
    if not np.all((confidences >= 0.0) & (confidences <= 1.0)):
        raise OptimizationError("view_confidences must lie in [0, 1]")
    view_variances = np.einsum("ij,jk,ik->i", picking, cov, picking)
    certain = confidences > 0.0
    omega = np.full(confidences.size, _ZERO_CONFIDENCE_OMEGA)
    alpha = (1.0 - confidences[certain]) / confidences[certain]
    omega[certain] = checked_tau(tau) * alpha * view_variances[certain]
    return np.diag(omega)


def omega_for_views(
    cov: FloatArray,
    picking: FloatArray,
    omega: ArrayLike | None,
    view_confidences: ArrayLike | None,
    tau: float,
) -> FloatArray:
    """``omega`` as given (checked to be k × k), Idzorek's from ``view_confidences``, or the
    default He & Litterman ``Ω``; giving both ``omega`` and confidences is an error."""
    if omega is not None and view_confidences is not None:
        raise OptimizationError("give omega or view_confidences (Idzorek's method), not both")
    if view_confidences is not None:
        return idzorek_omega(cov, picking, view_confidences, tau)
    if omega is None:
        return default_omega(cov, picking, tau)
    view_omega = np.asarray(omega, dtype=np.float64)
    n_views = picking.shape[0]
    if view_omega.shape != (n_views, n_views):
        raise OptimizationError(
            f"omega has shape {view_omega.shape}, expected ({n_views}, {n_views})"
        )
    return view_omega
