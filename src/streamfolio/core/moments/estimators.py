"""The online estimators of the mean and covariance of return vectors: Welford and EW.

Two estimators share one small interface (``update``, ``n``, ``mean``, ``covariance``):

* :class:`WelfordMoments`: exact multivariate Welford; covariance ``M2 / (n - 1)`` (unbiased).
* :class:`EWMoments`: exponentially weighted (Finch 2009) with a half-life in bars; equals
  ``pandas.DataFrame.ewm(alpha=1 - λ, adjust=False).cov(bias=True)`` with ``λ = 2^(-1/half_life)``.

Both can start from a *prior* (mean, covariance, pseudo-count) and convert losslessly to and
from the ``PortfolioStats`` record (:mod:`~streamfolio.core.moments.records`).

The arithmetic of an update is in the functions :func:`welford_update`, :func:`ew_update` and
:func:`covariance_of`, which take any number of leading (portfolio) dimensions: an estimator
calls them for its one vector, :class:`~streamfolio.core.panel.MonitorPanel` for all the
portfolios of a job's shard at once, and both get the same bits for the same portfolio (each
number is made by the same element-wise operations in the same order, never by a BLAS kernel
whose rounding depends on the shapes or the memory's alignment). The co-moment is kept as a
full symmetric matrix: ``(d_i·d_j)·c`` is symmetric to the bit, ``d_i·(c·d_j)`` would not be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from streamfolio.core.types import ArrayLike, FloatArray, IntArray
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


def _overflow_is_data() -> Any:
    """Returns beyond float64's range make infinities in the moments, as BLAS did silently: what
    holds them is refused where it matters (a checkpoint's state, :mod:`streamfolio.flink.state`;
    undefined metrics), not with a warning per update."""
    return np.errstate(over="ignore", invalid="ignore")


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


def welford_update(n: IntArray, mean: FloatArray, m2: FloatArray, x: FloatArray) -> None:
    """One Welford step for each row, in place: ``n += 1; d = x − m; m += d / n;
    M2 += (d dᵀ)·(n − 1)/n``.

    Shapes ``(…)``, ``(…, d)``, ``(…, d, d)`` and ``(…, d)``: any leading dimensions, the same
    bits for a row whatever the others (module docstring).

    >>> n, m, m2 = np.zeros(2, dtype=np.int64), np.zeros((2, 1)), np.zeros((2, 1, 1))
    >>> for x in ([[1.0], [2.0]], [[3.0], [6.0]]):
    ...     welford_update(n, m, m2, np.array(x))
    >>> n.tolist(), m.ravel().tolist(), m2.ravel().tolist()
    ([2, 2], [2.0, 4.0], [2.0, 8.0])
    """
    n += 1
    count = n.astype(np.float64)
    with _overflow_is_data():
        delta = x - mean
        mean += delta / count[..., None]
        m2 += (delta[..., :, None] * delta[..., None, :]) * ((count - 1.0) / count)[..., None, None]


def ew_update(
    n: IntArray,
    mean: FloatArray,
    scaled: FloatArray,
    scale: FloatArray,
    alpha: FloatArray,
    x: FloatArray,
) -> None:
    """One exponentially weighted step for each row, in place (:class:`EWMoments`): a row's
    first vector sets its mean; later ones ``d = x − m; m += α d; S = (1 − α)(S + α d dᵀ)``,
    with ``S = scale · scaled`` so that the decay is one multiply of ``scale``.

    >>> n, m = np.zeros(1, dtype=np.int64), np.zeros((1, 1))
    >>> scaled, scale, alpha = np.zeros((1, 1, 1)), np.ones(1), np.full(1, 0.5)
    >>> for x in (1.0, 3.0):
    ...     ew_update(n, m, scaled, scale, alpha, np.array([[x]]))
    >>> m.item(), (scaled * scale[:, None, None]).item()
    (2.0, 1.0)
    """
    n += 1
    later = n > 1
    with _overflow_is_data():
        delta = x - mean
        mean[...] = np.where(later[..., None], mean + alpha[..., None] * delta, x)
        scale[...] = np.where(later, scale * (1.0 - alpha), scale)
        factor = (1.0 - alpha) * alpha / scale
        step = (delta[..., :, None] * delta[..., None, :]) * factor[..., None, None]
        scaled[...] = np.where(later[..., None, None], scaled + step, scaled)
    small = scale < _EW_RESCALE_BELOW
    if small.any():
        scaled[...] = np.where(small[..., None, None], scaled * scale[..., None, None], scaled)
        scale[...] = np.where(small, 1.0, scale)


def covariance_of(
    kind: EstimatorKind, n: IntArray, matrix: FloatArray, scale: FloatArray | None = None
) -> FloatArray:
    """The covariance of each row from an estimator's arrays: Welford ``M2 / (n − 1)``, zeros
    while ``n < 2``; EW ``scale · scaled`` (a new array; a -0.0 comes out as 0.0).

    >>> covariance_of("welford", np.array([1, 3]), np.full((2, 1, 1), 4.0)).ravel().tolist()
    [0.0, 2.0]
    >>> covariance_of("ewm", np.array([5]), np.full((1, 1, 1), 4.0), np.array([0.5])).item()
    2.0
    """
    if kind == "ewm":
        assert scale is not None
        result: FloatArray = (matrix + 0.0) * scale[..., None, None]
        return result
    defined = n >= 2
    divisor = np.where(defined, n - 1, 1).astype(np.float64)
    return np.where(defined[..., None, None], (matrix + 0.0) / divisor[..., None, None], 0.0)


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
        self._m2: FloatArray = np.zeros((n_assets, n_assets))

    @classmethod
    def from_prior(cls, mean: ArrayLike, covariance: ArrayLike, count: int) -> WelfordMoments:
        """Start as if ``count`` observations with this mean and covariance had been seen."""
        mu, sigma = _prior_arrays(mean, covariance, count)
        moments = cls(len(mu))
        moments._n = int(count)
        moments._mean[:] = mu
        if count > 1:
            moments._m2[:] = _symmetric(sigma) * (count - 1)
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
        return covariance_of("welford", np.asarray(self._n), self._m2)

    def update(self, x: ArrayLike) -> None:
        """Add one return vector."""
        vector = _as_vector(x, len(self._mean))
        n = np.asarray(self._n)
        welford_update(n, self._mean, self._m2, vector)
        self._n = int(n)

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
        moments._m2[:] = _symmetric(np.asarray(state["m2"], dtype=np.float64))
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
        self._scaled: FloatArray = np.zeros((n_assets, n_assets))
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
            moments._scaled[:] = _symmetric(sigma)
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
        return covariance_of("ewm", np.asarray(self._n), self._scaled, np.asarray(self._scale))

    def update(self, x: ArrayLike) -> None:
        vector = _as_vector(x, len(self._mean))
        n, scale = np.asarray(self._n), np.asarray(self._scale)
        ew_update(n, self._mean, self._scaled, scale, np.asarray(self._alpha), vector)
        self._n, self._scale = int(n), float(scale)

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
        moments._scaled[:] = _symmetric(np.asarray(state["scaled"], dtype=np.float64))
        moments._scale = float(state["scale"])
        return moments
