"""Many portfolios' monitors as arrays: one bar for all of them in one numpy step.

A :class:`MonitorPanel` holds, for portfolios of the same number of tickers and the same
estimator, what a warmed-up :class:`~streamfolio.core.portfolio.PortfolioMonitor` holds (the
moments, the weights in force, the timestamps, the last metrics emitted), one row each. Its
:meth:`~MonitorPanel.take_bar` and :meth:`~MonitorPanel.metrics` do for all the rows at once what
``monitor.take_bar`` and ``monitor.metrics`` do for one, with the same functions
(:func:`~streamfolio.core.moments.estimators.welford_update`,
:func:`~streamfolio.core.metrics.performance_figures`), so a portfolio gets the same bits either
way: the Flink job's shards take a bar through the panel, and a portfolio through its own monitor
whenever something else happens to it (a control message, its warm-up), without the results
depending on which it was (SEMANTICS §4). In the job a portfolio's update costs 27–49 µs of
Python this way, against 95–118 µs with one call each (BENCHMARKS.md, "Ten thousand
portfolios").

>>> from streamfolio.core.moments import WelfordMoments, stats_record
>>> from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
>>> from streamfolio.core.returns import BarReturns
>>> spec = PortfolioSpec("p", ("A", "B"), bar_ms=60_000, periods_per_year=252)
>>> m = PortfolioMonitor(spec)
>>> prior = WelfordMoments.from_prior([0.0, 0.0], np.eye(2) * 1e-4, count=10)
>>> m.seed(stats_record(prior, "p", ("A", "B"), 1)), m.set_weights({"A": 0.5, "B": 0.5}, 1)
(None, None)
>>> m.on_bar(BarReturns(0, {"A": 1.0, "B": 1.0}, {}))           # warm-up: every ticker closed
>>> panel = MonitorPanel(2, "welford")
>>> panel.put(m)
>>> panel.take_bar(["p"], ["A", "B"], {"A": 0.01, "B": -0.02}, bar_end_ms=120_000)
['p']
>>> [(pid, record)] = panel.metrics(["p"]); round(record["sharpRatio"], 4)
-1.0495
>>> m.take_bar(BarReturns(1, {"A": 1.0, "B": 1.0}, {"A": 0.01, "B": -0.02}))  # by hand
True
>>> m.metrics() == record and m.to_state() == panel.monitor("p").to_state()   # the same bits
True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from streamfolio.core.metrics import performance_figures
from streamfolio.core.moments import EstimatorKind
from streamfolio.core.moments.estimators import covariance_of, ew_update, welford_update
from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.types import FloatArray, IntArray

__all__ = ["MetricsFigures", "MonitorPanel", "panel_key"]

_FIGURE_RTOL: Final = 1e-12
"""As :data:`streamfolio.core.portfolio._FIGURE_RTOL`: figures closer than this are the same."""
_COLUMNS: Final = (
    "n",
    "mean",
    "matrix",
    "scale",
    "alpha",
    "weights",
    "has_weights",
    "weights_ts",
    "stats_ts",
    "seed_ts",
    "last",
    "has_last",
    "seen",
)
"""The arrays of a panel, one row per portfolio (what :meth:`MonitorPanel.to_arrays` gives)."""


class MetricsFigures(NamedTuple):
    """The metrics of some of a panel's portfolios, one entry per portfolio (in ``specs``
    order): the fields of ``PortfolioMetrics`` that are not the portfolio's own settings."""

    specs: list[PortfolioSpec]
    risk: FloatArray
    expected_return: FloatArray
    sharpe: FloatArray
    timestamp: IntArray
    vectors: IntArray
    """The number of return vectors behind each (``count``)."""
    mean_return: FloatArray
    variance: FloatArray
    weights: FloatArray
    stats_timestamp: IntArray

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Per portfolio: its spec, then each figure as a Python value (weights a list)."""
        columns = [column.tolist() for column in self[1:]]
        return zip(self.specs, *columns, strict=True)


def panel_key(spec: PortfolioSpec) -> tuple[int, EstimatorKind]:
    """Which panel a portfolio's monitor goes to: its number of tickers and estimator.

    >>> panel_key(PortfolioSpec("p", ("A", "B"), 60_000, 252.0))
    (2, 'welford')
    """
    return len(spec.tickers), spec.estimator


class MonitorPanel:
    """The warmed-up monitors of portfolios of ``n_assets`` tickers and one estimator ``kind``.

    Rows are added with :meth:`put` (a monitor), taken out with :meth:`monitor` and
    :meth:`remove`; :meth:`take_bar`, :meth:`metrics` and :meth:`statistics` work on the rows
    named. Removed rows are reused, so the arrays grow only with the most portfolios held.
    """

    def __init__(self, n_assets: int, kind: EstimatorKind) -> None:
        self.n_assets = n_assets
        self.kind: EstimatorKind = kind
        self._row: dict[str, int] = {}
        self._specs: dict[str, PortfolioSpec] = {}
        self._free: list[int] = []
        self._ticker_index: dict[str, int] = {}
        """Every ticker of the rows → its column in a bar's returns (only grows)."""
        self._columns: IntArray = np.zeros((0, n_assets), dtype=np.int64)
        """Per row: its tickers' columns."""
        self._arrays: dict[str, npt.NDArray[Any]] = self._empty(0)

    def _empty(self, rows: int) -> dict[str, npt.NDArray[Any]]:
        d = self.n_assets
        return {
            "n": np.zeros(rows, dtype=np.int64),
            "mean": np.zeros((rows, d)),
            "matrix": np.zeros((rows, d, d)),
            "scale": np.ones(rows),
            "alpha": np.zeros(rows),
            "weights": np.zeros((rows, d)),
            "has_weights": np.zeros(rows, dtype=bool),
            "weights_ts": np.zeros(rows, dtype=np.int64),
            "stats_ts": np.zeros(rows, dtype=np.int64),
            "seed_ts": np.full(rows, -1, dtype=np.int64),
            "last": np.zeros((rows, 3 + d)),
            "has_last": np.zeros(rows, dtype=bool),
            "seen": np.ones((rows, d), dtype=bool),
        }

    # -- rows -----------------------------------------------------------------------------

    def __contains__(self, portfolio_id: object) -> bool:
        return portfolio_id in self._row

    def __len__(self) -> int:
        return len(self._row)

    @property
    def portfolio_ids(self) -> list[str]:
        """The portfolios held, in no particular order."""
        return list(self._row)

    def spec(self, portfolio_id: str) -> PortfolioSpec:
        return self._specs[portfolio_id]

    def put(self, monitor: PortfolioMonitor) -> None:
        """Hold ``monitor``'s state (replacing the portfolio's row, if any). It must fit this
        panel (:func:`panel_key`)."""
        spec = monitor.spec
        if panel_key(spec) != (self.n_assets, self.kind):
            raise ValueError(f"portfolio {spec.portfolio_id!r} does not fit this panel")
        row = self._row.get(spec.portfolio_id)
        if row is None:
            row = self._new_row()
            self._row[spec.portfolio_id] = row
        self._specs[spec.portfolio_id] = spec
        self._columns[row] = [self._column(t) for t in spec.tickers]
        self._write_row(row, monitor.to_state(arrays=True), spec)

    def monitor(self, portfolio_id: str) -> PortfolioMonitor:
        """A live monitor with the portfolio's state (changing it does not change the row)."""
        spec = self._specs[portfolio_id]
        return PortfolioMonitor.from_state(spec, self._row_state(self._row[portfolio_id], spec))

    def remove(self, portfolio_id: str) -> None:
        row = self._row.pop(portfolio_id)
        del self._specs[portfolio_id]
        self._free.append(row)

    def _new_row(self) -> int:
        if self._free:
            return self._free.pop()
        used = len(self._arrays["n"])
        grown = self._empty(max(16, 2 * used))
        for name, array in self._arrays.items():
            grown[name][:used] = array
        self._arrays = grown
        capacity = len(grown["n"])
        columns = np.zeros((capacity, self.n_assets), dtype=np.int64)
        columns[:used] = self._columns
        self._columns = columns
        self._free = list(range(capacity - 1, used, -1))
        return used

    def _column(self, ticker: str) -> int:
        column = self._ticker_index.get(ticker)
        if column is None:
            column = self._ticker_index[ticker] = len(self._ticker_index)
        return column

    def _write_row(self, row: int, state: Mapping[str, Any], spec: PortfolioSpec) -> None:
        a = self._arrays
        waiting = set(state["waiting_for"])
        a["seen"][row] = [t not in waiting for t in spec.tickers]
        moments = state["moments"]
        a["n"][row] = moments["n"]
        a["mean"][row] = moments["mean"]
        if moments["kind"] == "ewm":
            a["matrix"][row] = moments["scaled"]
            a["scale"][row] = moments["scale"]
            a["alpha"][row] = 1.0 - 2.0 ** (-1.0 / float(moments["half_life_bars"]))
        else:
            a["matrix"][row] = moments["m2"]
        weights = state["weights"]
        a["has_weights"][row] = weights is not None
        a["weights"][row] = 0.0 if weights is None else weights
        a["weights_ts"][row] = state["weights_timestamp_ms"]
        a["stats_ts"][row] = state["stats_timestamp_ms"]
        seeded = state["seed_timestamp_ms"]
        a["seed_ts"][row] = -1 if seeded is None else seeded
        last = state["last_metrics"]
        a["has_last"][row] = last is not None
        a["last"][row] = 0.0 if last is None else last

    def _row_state(self, row: int, spec: PortfolioSpec) -> dict[str, Any]:
        """The row as ``PortfolioMonitor.to_state()`` writes it."""
        a = self._arrays
        moments: dict[str, Any] = {"kind": self.kind, "n": int(a["n"][row])}
        if self.kind == "ewm":
            moments["half_life_bars"] = spec.half_life_bars
        moments["mean"] = a["mean"][row].tolist()
        if self.kind == "ewm":
            moments["scaled"] = a["matrix"][row].copy()
            moments["scale"] = float(a["scale"][row])
        else:
            moments["m2"] = a["matrix"][row].copy()
        seeded = int(a["seed_ts"][row])
        seen = a["seen"][row].tolist()
        return {
            "moments": moments,
            "waiting_for": [t for t, ok in zip(spec.tickers, seen, strict=True) if not ok],
            "weights": a["weights"][row].tolist() if a["has_weights"][row] else None,
            "weights_timestamp_ms": int(a["weights_ts"][row]),
            "stats_timestamp_ms": int(a["stats_ts"][row]),
            "seed_timestamp_ms": None if seeded < 0 else seeded,
            "last_metrics": a["last"][row].tolist() if a["has_last"][row] else None,
        }

    def _rows(self, portfolio_ids: Sequence[str]) -> IntArray:
        return np.fromiter((self._row[p] for p in portfolio_ids), np.int64, len(portfolio_ids))

    # -- a bar ----------------------------------------------------------------------------

    def take_bar(
        self,
        portfolio_ids: Sequence[str],
        closes: Iterable[str],
        returns: Mapping[str, float],
        bar_end_ms: int,
    ) -> list[str]:
        """``monitor.take_bar`` for each of ``portfolio_ids``: the tickers with a close in the
        bar, and their log returns (0 for a ticker without one). A portfolio still warming up
        (not every ticker has closed yet) counts its closes; the others with at least one
        return update their statistics. Returns those updated."""
        rows = self._rows(portfolio_ids)
        index = self._ticker_index
        bar = np.zeros(len(index) + 1)
        has = np.zeros(len(bar), dtype=bool)
        for ticker, value in returns.items():
            column = index.get(ticker)
            if column is not None:
                bar[column] = value
                has[column] = True
        columns = self._columns[rows]
        a = self._arrays
        seen = a["seen"][rows]
        warm = seen.all(axis=1)
        if not warm.all():
            closed = np.zeros(len(bar), dtype=bool)
            closed[[index[t] for t in closes if t in index]] = True
            cold = rows[~warm]
            a["seen"][cold] = seen[~warm] | closed[columns[~warm]]
        traded = warm & has[columns].any(axis=1)
        rows = rows[traded]
        if len(rows) == 0:
            return []
        x = bar[columns[traded]]
        n, mean, matrix = a["n"][rows], a["mean"][rows], a["matrix"][rows]
        if self.kind == "ewm":
            scale = a["scale"][rows]
            ew_update(n, mean, matrix, scale, a["alpha"][rows], x)
            a["scale"][rows] = scale
        else:
            welford_update(n, mean, matrix, x)
        a["n"][rows], a["mean"][rows], a["matrix"][rows] = n, mean, matrix
        a["stats_ts"][rows] = bar_end_ms
        return [pid for pid, took in zip(portfolio_ids, traded.tolist(), strict=True) if took]

    def statistics(
        self, portfolio_ids: Sequence[str]
    ) -> tuple[IntArray, FloatArray, FloatArray, IntArray]:
        """``(n, mean, covariance, stats timestamp)`` of the rows, as the monitors' moments
        give them."""
        rows = self._rows(portfolio_ids)
        a = self._arrays
        covariance = covariance_of(self.kind, a["n"][rows], a["matrix"][rows], a["scale"][rows])
        return a["n"][rows], a["mean"][rows], covariance, a["stats_ts"][rows]

    def metrics_figures(self, portfolio_ids: Sequence[str]) -> MetricsFigures | None:
        """``monitor.metrics()`` for each of ``portfolio_ids``, as arrays: the figures of the
        portfolios whose metrics differ from the last ones given (which are then remembered);
        None when there are none."""
        rows = self._rows(portfolio_ids)
        a = self._arrays
        ready = a["has_weights"][rows] & (a["n"][rows] != 0)
        rows = rows[ready]
        ids = [p for p, ok in zip(portfolio_ids, ready.tolist(), strict=True) if ok]
        if len(rows) == 0:
            return None
        n, weights = a["n"][rows], a["weights"][rows]
        specs = [self._specs[p] for p in ids]
        q = np.fromiter((s.periods_per_year for s in specs), np.float64, len(specs))
        rf = np.fromiter((s.risk_free_rate for s in specs), np.float64, len(specs))
        covariance = covariance_of(self.kind, n, a["matrix"][rows], a["scale"][rows])
        mean_return, variance, annual, risk, sharpe = performance_figures(
            weights, a["mean"][rows], covariance, q, rf
        )
        defined = np.isfinite(annual) & np.isfinite(risk) & np.isfinite(sharpe)
        key = np.concatenate([annual[:, None], risk[:, None], sharpe[:, None], weights], axis=1)
        last = a["last"][rows]
        diff = np.abs(key - last)
        same = (key == last) | (diff <= np.abs(_FIGURE_RTOL * last))
        same |= diff <= np.abs(_FIGURE_RTOL * key)
        changed = defined & ~(a["has_last"][rows] & same.all(axis=1))
        if not changed.any():
            return None
        rows = rows[changed]
        a["last"][rows] = key[changed]
        a["has_last"][rows] = True
        stats_ts = a["stats_ts"][rows]
        return MetricsFigures(
            [specs[i] for i in np.flatnonzero(changed).tolist()],
            risk[changed],
            annual[changed],
            sharpe[changed],
            np.maximum(stats_ts, a["weights_ts"][rows]),
            n[changed],
            mean_return[changed],
            variance[changed],
            weights[changed],
            stats_ts,
        )

    def metrics(self, portfolio_ids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """:meth:`metrics_figures` as ``PortfolioMetrics`` records (what ``monitor.metrics()``
        returns), by portfolio id."""
        figures = self.metrics_figures(portfolio_ids)
        if figures is None:
            return []
        records = []
        for spec, *values in figures.rows():
            risk, annual, sharpe, timestamp, n, mean_return, variance, weights, stats_ts = values
            record = {
                "portfolioId": spec.portfolio_id,
                "risk": risk,
                "expectedReturn": annual,
                "sharpRatio": sharpe,
                "timestamp": timestamp,
                "count": n,
                "meanReturn": mean_return,
                "variance": variance,
                "periodsPerYear": float(spec.periods_per_year),
                "riskFreeRate": float(spec.risk_free_rate),
                "weights": dict(zip(spec.tickers, weights, strict=True)),
                "statsTimestamp": stats_ts,
                "sharpeThreshold": spec.sharpe_threshold,
            }
            records.append((spec.portfolio_id, record))
        return records

    # -- state ----------------------------------------------------------------------------

    def to_arrays(self) -> tuple[list[str], dict[str, npt.NDArray[Any]]]:
        """The portfolios held and their rows' arrays (copies), for a checkpoint."""
        ids = list(self._row)
        rows = self._rows(ids)
        return ids, {name: self._arrays[name][rows] for name in _COLUMNS}

    @classmethod
    def from_arrays(
        cls,
        n_assets: int,
        kind: EstimatorKind,
        specs: Sequence[PortfolioSpec],
        arrays: Mapping[str, npt.NDArray[Any]],
    ) -> MonitorPanel:
        """The panel :meth:`to_arrays` described, its rows' portfolios defined by ``specs``."""
        panel = cls(n_assets, kind)
        panel._arrays = {name: np.array(arrays[name]) for name in _COLUMNS}
        panel._columns = np.zeros((len(specs), n_assets), dtype=np.int64)
        for row, spec in enumerate(specs):
            panel._row[spec.portfolio_id] = row
            panel._specs[spec.portfolio_id] = spec
            panel._columns[row] = [panel._column(t) for t in spec.tickers]
        return panel
