"""Black-Litterman expected returns, numpy only, matching PyPortfolioOpt 1.6.

The public names live here. The market prior (:func:`market_implied_risk_aversion`,
:func:`market_implied_prior_returns`) is in :mod:`~streamfolio.core.black_litterman.prior`; the
views (:func:`absolute_views`) and their uncertainty (:func:`default_omega`,
:func:`idzorek_omega`) in :mod:`~streamfolio.core.black_litterman.views`; the posterior
(:func:`black_litterman`, :class:`BlackLittermanPosterior`) and the weights on it
(:func:`black_litterman_weights`) in :mod:`~streamfolio.core.black_litterman.model`.

Units. ``Π`` from :func:`market_implied_prior_returns` includes the risk-free rate, so ``Q`` must
be total (not excess) returns over the same horizon as ``Σ``; pass the same annual ``r_f`` to the
optimiser, which subtracts it.

References
----------
He, G. & Litterman, R. (1999). *The Intuition Behind Black-Litterman Model Portfolios*.
Idzorek, T. (2005). *A Step-by-Step Guide to the Black-Litterman Model*.
Walters, J. (2014). *The Black-Litterman Model in Detail*, formulas (41) and (44).
"""

from __future__ import annotations

from streamfolio.core.black_litterman.model import (
    BlackLittermanPosterior,
    black_litterman,
    black_litterman_weights,
)
from streamfolio.core.black_litterman.prior import (
    market_implied_prior_returns,
    market_implied_risk_aversion,
)
from streamfolio.core.black_litterman.views import absolute_views, default_omega, idzorek_omega

__all__ = [
    "BlackLittermanPosterior",
    "absolute_views",
    "black_litterman",
    "black_litterman_weights",
    "default_omega",
    "idzorek_omega",
    "market_implied_prior_returns",
    "market_implied_risk_aversion",
]
