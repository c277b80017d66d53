"""The online estimators of the mean and covariance of return vectors: Welford and EW.

Two estimators share one small interface (``update``, ``n``, ``mean``, ``covariance``):

* :class:`WelfordMoments`: exact multivariate Welford; covariance ``M2 / (n - 1)`` (unbiased).
* :class:`EWMoments`: exponentially weighted (Finch 2009) with a half-life in bars; equals
  ``pandas.DataFrame.ewm(alpha=1 - λ, adjust=False).cov(bias=True)`` with ``λ = 2^(-1/half_life)``.

Both can start from a *prior* (mean, covariance, pseudo-count) and convert losslessly to and
from the ``PortfolioStats`` record (:mod:`~streamfolio.core.moments.records`). The
co-moment is updated in place with a BLAS rank-1 update of its upper triangle (``dsyr``), which
costs one pass over N²/2 numbers per vector and never forms ``np.outer``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
from scipy.linalg import blas

from streamfolio.core.types import ArrayLike, FloatArray
from streamfolio.errors import DataError

EstimatorKind: TypeAlias = Literal["welford", "ewm"]


class MomentsError(DataError, ValueError):
    """Statistics that do not fit: a prior's shapes, a return vector, an estimator's settings.

    Also a ``ValueError``, which is what these raised before.
    """


class MissingTickersError(MomentsError, KeyError):
    """A statistics record lacks tickers the portfolio holds (also a ``KeyError``, as before)."""


# Below this the lazily kept EW scale factor is folded back into the matrix, long before
# float64 underflow (~1e-308) could lose precision.
_EW_RESCALE_BELOW = 1e-100


_STRICTLY_LOWER: dict[int, npt.NDArray[np.bool_]] = {}
"""Per size n, the mask of the entries below the diagonal (made once)."""


def _symmetric(upper: FloatArray) -> FloatArray:
    """The full symmetric matrix whose upper triangle is ``upper`` (a new C-ordered array).

    One selection and one in-place add, instead of ``triu(u) + triu(u, 1).T``: the same bits
    (adding 0.0 turns a -0.0 into 0.0 as that sum did), four times faster, and it runs three
    times per portfolio bar in the job (BENCHMARKS.md, scale run).

    >>> _symmetric(np.array([[1.0, 2.0], [-7.0, 3.0]])).tolist()
    [[1.0, 2.0], [2.0, 3.0]]
    """
    n = upper.shape[0]
    lower = _STRICTLY_LOWER.get(n)
    if lower is None:
        lower = _STRICTLY_LOWER[n] = np.tri(n, k=-1, dtype=bool)
    result: FloatArray = np.where(lower, upper.T, upper)
    result += 0.0
    return result


def _prior_arrays(
    mean: ArrayLike, covariance: ArrayLike, count: int
) -> tuple[FloatArray, FloatArray]:
    """A prior's mean and covariance as float arrays, checked against each other and ``count``."""
    mu = np.asarray(mean, dtype=np.float64)
    sigma = np.asarray(covariance, dtype=np.float64)
    if sigma.shape != (len(mu), len(mu)):
        raise MomentsError(f"covariance shape {sigma.shape} does not match {len(mu)} means")
    if count < 0:
        raise MomentsError(f"prior count must be >= 0, got {count}")
    return mu, sigma


def _as_vector(x: ArrayLike, n_assets: int) -> FloatArray:
    vector = np.asarray(x, dtype=np.float64)
    if vector.shape != (n_assets,):
        raise MomentsError(f"expected a vector of {n_assets} returns, got shape {vector.shape}")
    return vector


class OnlineMoments(Protocol):
    """What the pipeline needs from an online estimator of mean and covariance."""

    kind: EstimatorKind

    @property
    def n(self) -> int: ...

    @property
    def n_assets(self) -> int: ...

    @property
    def mean(self) -> FloatArray: ...

    @property
    def covariance(self) -> FloatArray: ...

    def update(self, x: ArrayLike) -> None: ...

    def to_state(self, *, arrays: bool = False) -> dict[str, Any]: ...


class WelfordMoments:
    """Exact online mean and unbiased covariance (multivariate Welford).

    Parameters
    ----------
    n_assets:
        Length of each return vector.

    Examples
    --------
    >>> import numpy as np
    >>> m = WelfordMoments(2)
    >>> for x in ([0.01, 0.02], [0.03, -0.01], [-0.02, 0.0]):
    ...     m.update(x)
    >>> m.n
    3
    >>> np.allclose(m.covariance, np.cov([[0.01, 0.03, -0.02], [0.02, -0.01, 0.0]]))
    True

    A prior counts as ``count`` observations already seen:

    >>> p = WelfordMoments.from_prior([0.0, 0.0], np.eye(2) * 1e-4, count=50)
    >>> p.n
    50
    """

    kind: EstimatorKind = "welford"
    __slots__ = ("_m2", "_mean", "_n")

    def __init__(self, n_assets: int) -> None:
        if n_assets < 1:
            raise MomentsError(f"n_assets must be at least 1, got {n_assets}")
        self._n = 0
        self._mean = np.zeros(n_assets)
        # Fortran order so dsyr updates in place without a copy.
        self._m2: FloatArray = np.zeros((n_assets, n_assets), order="F")

    @classmethod
    def from_prior(cls, mean: ArrayLike, covariance: ArrayLike, count: int) -> WelfordMoments:
        """Start as if ``count`` observations with this mean and covariance had been seen."""
        mu, sigma = _prior_arrays(mean, covariance, count)
        moments = cls(len(mu))
        moments._n = int(count)
        moments._mean[:] = mu
        if count > 1:
            moments._m2[:] = sigma * (count - 1)
        return moments

    @property
    def n(self) -> int:
        """Number of observations, prior pseudo-count included."""
        return self._n

    @property
    def n_assets(self) -> int:
        return len(self._mean)

    @property
    def mean(self) -> FloatArray:
        """Mean return vector (a copy)."""
        return self._mean.copy()

    @property
    def comoment(self) -> FloatArray:
        """Sum of outer products of deviations, ``M2`` (symmetric)."""
        return _symmetric(self._m2)

    @property
    def covariance(self) -> FloatArray:
        """Unbiased covariance ``M2 / (n - 1)``; zeros while ``n < 2`` (not yet defined)."""
        if self._n < 2:
            return np.zeros_like(self._m2, order="C")
        return _symmetric(self._m2) / (self._n - 1)

    def update(self, x: ArrayLike) -> None:
        """Add one return vector."""
        vector = _as_vector(x, len(self._mean))
        self._n += 1
        delta = vector - self._mean
        self._mean += delta / self._n
        blas.dsyr((self._n - 1) / self._n, delta, a=self._m2, lower=0, overwrite_a=1)

    def merge(self, other: WelfordMoments) -> WelfordMoments:
        """Combine with the moments of other observations (Chan, Golub & LeVeque 1979).

        >>> import numpy as np
        >>> rng = np.random.default_rng(0); xs = rng.normal(size=(30, 3))
        >>> a, b = WelfordMoments(3), WelfordMoments(3)
        >>> for x in xs[:12]: a.update(x)
        >>> for x in xs[12:]: b.update(x)
        >>> np.allclose(a.merge(b).covariance, np.cov(xs.T))
        True
        """
        if other.n_assets != self.n_assets:
            raise MomentsError("cannot merge moments of different dimensions")
        merged = WelfordMoments(self.n_assets)
        n = self._n + other._n
        if n == 0:
            return merged
        delta = other._mean - self._mean
        merged._n = n
        merged._mean[:] = self._mean + delta * (other._n / n)
        merged._m2[:] = (
            _symmetric(self._m2)
            + _symmetric(other._m2)
            + np.outer(delta, delta) * (self._n * other._n / n)
        )
        return merged

    def to_state(self, *, arrays: bool = False) -> dict[str, Any]:
        """Exact state as plain Python values (for keyed state and checkpoints); ``arrays``:
        ``m2`` as a new float64 array instead of nested lists."""
        m2 = _symmetric(self._m2)
        return {
            "kind": self.kind,
            "n": self._n,
            "mean": self._mean.tolist(),
            "m2": m2 if arrays else m2.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> WelfordMoments:
        mean = np.asarray(state["mean"], dtype=np.float64)
        moments = cls(len(mean))
        moments._n = int(state["n"])
        moments._mean[:] = mean
        moments._m2[:] = np.asarray(state["m2"], dtype=np.float64)
        return moments


class EWMoments:
    """Exponentially weighted mean and covariance with a half-life in bars.

    ``λ = 2^(-1/half_life)``, ``α = 1 - λ``; each update ``d = x - m; m += α d;
    S = (1 - α)(S + α d dᵀ)``. Without a prior the first vector sets the mean and ``S = 0``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1); xs = rng.normal(size=(40, 2))
    >>> ew = EWMoments(2, half_life_bars=10)
    >>> for x in xs: ew.update(x)
    >>> alpha = 1 - 2 ** (-1 / 10)
    >>> ref = pd.DataFrame(xs).ewm(alpha=alpha, adjust=False).cov(bias=True).iloc[-2:].to_numpy()
    >>> np.allclose(ew.covariance, ref)
    True
    """

    kind: EstimatorKind = "ewm"
    __slots__ = ("_alpha", "_mean", "_n", "_scale", "_scaled", "half_life_bars")

    def __init__(self, n_assets: int, half_life_bars: float) -> None:
        if n_assets < 1:
            raise MomentsError(f"n_assets must be at least 1, got {n_assets}")
        if not (half_life_bars > 0 and math.isfinite(half_life_bars)):
            raise MomentsError(f"half_life_bars must be a positive number, got {half_life_bars}")
        self.half_life_bars = float(half_life_bars)
        self._alpha: float = 1.0 - 2.0 ** (-1.0 / self.half_life_bars)
        self._n = 0
        self._mean = np.zeros(n_assets)
        # S = scale * scaled: the (1 - α) decay of every entry becomes one scalar multiply.
        self._scaled: FloatArray = np.zeros((n_assets, n_assets), order="F")
        self._scale = 1.0

    @classmethod
    def from_prior(
        cls, mean: ArrayLike, covariance: ArrayLike, count: int, half_life_bars: float
    ) -> EWMoments:
        """Start from a prior mean and covariance, counted as ``count`` observations."""
        mu, sigma = _prior_arrays(mean, covariance, count)
        moments = cls(len(mu), half_life_bars)
        moments._n = int(count)
        moments._mean[:] = mu
        if count > 0:
            moments._scaled[:] = sigma
        return moments

    @property
    def alpha(self) -> float:
        """Weight of the newest vector, ``1 - λ``."""
        return self._alpha

    @property
    def n(self) -> int:
        return self._n

    @property
    def n_assets(self) -> int:
        return len(self._mean)

    @property
    def mean(self) -> FloatArray:
        return self._mean.copy()

    @property
    def covariance(self) -> FloatArray:
        """Exponentially weighted covariance (population form, as pandas ``bias=True``)."""
        return _symmetric(self._scaled) * self._scale

    def update(self, x: ArrayLike) -> None:
        vector = _as_vector(x, len(self._mean))
        self._n += 1
        if self._n == 1:
            self._mean[:] = vector
            return
        a = self._alpha
        delta = vector - self._mean
        self._mean += a * delta
        self._scale *= 1.0 - a
        blas.dsyr((1.0 - a) * a / self._scale, delta, a=self._scaled, lower=0, overwrite_a=1)
        if self._scale < _EW_RESCALE_BELOW:
            self._scaled *= self._scale
            self._scale = 1.0

    def to_state(self, *, arrays: bool = False) -> dict[str, Any]:
        scaled = _symmetric(self._scaled)
        return {
            "kind": self.kind,
            "n": self._n,
            "half_life_bars": self.half_life_bars,
            "mean": self._mean.tolist(),
            "scaled": scaled if arrays else scaled.tolist(),
            "scale": self._scale,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EWMoments:
        mean = np.asarray(state["mean"], dtype=np.float64)
        moments = cls(len(mean), float(state["half_life_bars"]))
        moments._n = int(state["n"])
        moments._mean[:] = mean
        moments._scaled[:] = np.asarray(state["scaled"], dtype=np.float64)
        moments._scale = float(state["scale"])
        return moments
