"""Online mean and covariance of return vectors, and their ``PortfolioStats`` records.

The public names live here: the estimators (:class:`WelfordMoments`, :class:`EWMoments`, their
:class:`OnlineMoments` interface, in :mod:`~streamfolio.core.moments.estimators`, which describes
them) and the functions that make them and convert them to and from records
(:mod:`~streamfolio.core.moments.records`).
"""

from __future__ import annotations

from streamfolio.core.moments.estimators import (
    EstimatorKind,
    EWMoments,
    MissingTickersError,
    MomentsError,
    OnlineMoments,
    WelfordMoments,
)
from streamfolio.core.moments.records import (
    StatsLayout,
    from_upper_triangle,
    moments_from_prior,
    moments_from_state,
    moments_from_stats_record,
    new_moments,
    stats_arrays,
    stats_record,
    upper_triangle,
)

__all__ = [
    "EWMoments",
    "EstimatorKind",
    "MissingTickersError",
    "MomentsError",
    "OnlineMoments",
    "StatsLayout",
    "WelfordMoments",
    "from_upper_triangle",
    "moments_from_prior",
    "moments_from_state",
    "moments_from_stats_record",
    "new_moments",
    "stats_arrays",
    "stats_record",
    "upper_triangle",
]
