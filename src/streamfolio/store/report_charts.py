"""The report's charts: matplotlib figures of one portfolio's history, embedded as ``data:`` URIs.

Three charts share one time axis, their plot areas aligned down the page: the Sharpe ratio
against its threshold with the rebalances marked (:func:`sharpe_chart`), expected return and risk
(:func:`return_risk_chart`), and the weights over time as a stacked area (:func:`weights_chart`).
They are drawn by matplotlib's Agg renderer (no display, no pyplot state) and :func:`embed` turns
each into an ``<img>`` with a PNG or SVG ``data:`` URI, so the page loads nothing from anywhere.
Times are plotted as UTC instants and only labelled in the report's zone.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from streamfolio.store.report_data import REBALANCE, ReportData

__all__ = [
    "ImageFormat",
    "TimeRange",
    "embed",
    "instants",
    "return_risk_chart",
    "sharpe_chart",
    "weights_chart",
    "x_range_of",
]

ImageFormat = Literal["png", "svg"]
_Times: TypeAlias = npt.NDArray[np.datetime64]
TimeRange: TypeAlias = tuple[np.datetime64, np.datetime64]
"""The x range every chart shares."""

_WIDTH_IN: Final = 10.0
_LEFT_IN: Final = 0.85  # room for the y label and tick labels such as "100%"
_RIGHT_IN: Final = 0.2
_BOTTOM_IN: Final = 0.6  # room for two lines of concise date labels
_DPI: Final = 110
_PAD: Final = dt.timedelta(minutes=30)  # x range around a single point in time
_PALETTE: Final = (
    # Tableau 10, then more of matplotlib's tab20, so a dozen tickers keep distinct colours.
    *("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"),
    *("#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94"),
    *("#f7b6d2", "#dbdb8d", "#9edae5", "#393b79"),
)
_MAX_MARKERS: Final = 300
_LEGEND_COLUMNS: Final = 10  # beyond this many rebalances, vertical lines hide the Sharpe curve


def instants(timestamps_ms: Sequence[int]) -> _Times:
    """Epoch milliseconds as the x values of a chart (``datetime64[ms]``, UTC)."""
    # Plotted as UTC instants and only *labelled* in the report's zone: wall-clock values would
    # run backwards where the clocks go back (Casablanca does so every Ramadan).
    times: _Times = np.asarray(timestamps_ms, dtype=np.int64).astype("datetime64[ms]")
    return times


def _figure(height: float, *, top_in: float = 0.15) -> Figure:
    """A figure whose plot area has the same left and right edges as every other chart's, so
    the time axes of the charts line up down the page (a layout engine would not do that)."""
    figure = Figure(figsize=(_WIDTH_IN, height), dpi=_DPI)
    FigureCanvasAgg(figure)  # Agg: renders without a display
    figure.subplots_adjust(
        left=_LEFT_IN / _WIDTH_IN,
        right=1 - _RIGHT_IN / _WIDTH_IN,
        bottom=_BOTTOM_IN / height,
        top=1 - top_in / height,
    )
    return figure


def _dress_time_axis(figure: Figure, x_range: TimeRange, zone: ZoneInfo) -> None:
    for ax in figure.axes:
        locator = mdates.AutoDateLocator(tz=zone)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        formatter = mdates.ConciseDateFormatter(locator, tz=zone)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(formatter)
        ax.set_xlim(x_range[0], x_range[1])  # type: ignore[arg-type]
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)


def embed(figure: Figure, alt: str, image_format: ImageFormat) -> str:
    """``figure`` as an ``<img>`` element whose source is a PNG or SVG ``data:`` URI."""
    buffer = io.BytesIO()
    if image_format == "svg":
        # No date in the file, so the same data gives the same page.
        figure.savefig(buffer, format="svg", metadata={"Date": None})
        mime = "image/svg+xml"
    else:
        figure.savefig(buffer, format="png", metadata={"Software": None})
        mime = "image/png"
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    # An <img> per chart (rather than inline <svg>) keeps each chart's element ids to itself.
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{data}">'


def sharpe_chart(data: ReportData, x: _Times, x_range: TimeRange, zone: ZoneInfo) -> Figure:
    """The Sharpe ratio at times ``x``, its threshold (a step when it changes), the rebalances."""
    figure = _figure(3.6)
    ax = figure.add_subplot()
    sharpe = [m.sharpe_ratio for m in data.metrics]
    marker = "." if len(sharpe) < 60 else None
    ax.plot(x, sharpe, color="tab:blue", lw=1.3, marker=marker, label="Sharpe ratio")
    carried = [m.sharpe_threshold for m in data.metrics]
    if any(t is not None for t in carried):
        # The threshold travels with each metrics record, so a config change shows as a step.
        levels = pd.Series([math.nan if t is None else t for t in carried]).ffill().to_numpy()
        ax.step(x, levels, where="post", color="tab:red", ls="--", lw=1.2, label="threshold")
    elif data.threshold is not None:
        ax.axhline(data.threshold, color="tab:red", ls="--", lw=1.2, label="threshold")
    done = [e for e in data.events if e.decision == REBALANCE][:_MAX_MARKERS]
    for i, when in enumerate(instants([e.timestamp_ms for e in done])):
        ax.axvline(when, color="tab:green", alpha=0.5, lw=0.9, label="rebalance" if i == 0 else "")
    ax.set_ylabel("Sharpe ratio (annualised)")
    ax.legend(loc="best", fontsize="small", frameon=False)
    _dress_time_axis(figure, x_range, zone)
    return figure


def return_risk_chart(data: ReportData, x: _Times, x_range: TimeRange, zone: ZoneInfo) -> Figure:
    """Expected return and risk (annualised) at times ``x``."""
    figure = _figure(3.2)
    ax = figure.add_subplot()
    marker = "." if len(data.metrics) < 60 else None
    ax.plot(
        x,
        [m.expected_return for m in data.metrics],
        color="tab:green",
        lw=1.3,
        marker=marker,
        label="expected return",
    )
    ax.plot(
        x,
        [m.risk for m in data.metrics],
        color="tab:orange",
        lw=1.3,
        marker=marker,
        label="risk (volatility)",
    )
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("annualised")
    ax.legend(loc="best", fontsize="small", frameon=False)
    _dress_time_axis(figure, x_range, zone)
    return figure


def _weight_steps(
    data: ReportData, first_ms: int
) -> tuple[list[int], list[str], npt.NDArray[np.float64]]:
    """Change times (none before ``first_ms``), tickers, and the weights from each change on.

    Falls back to the weights carried by the metrics when no weights records are stored.
    """
    changes: list[tuple[int, dict[str, float]]] = [
        (w.timestamp_ms, w.weights) for w in data.weights
    ]
    if not changes:
        for m in data.metrics:
            if m.weights and (not changes or changes[-1][1] != m.weights):
                changes.append((m.timestamp_ms, m.weights))
    times = [max(t, first_ms) for t, _ in changes]  # those in force at the start, from the start
    tickers: dict[str, None] = {}
    for _, weights in changes:
        tickers.update(dict.fromkeys(weights))
    matrix = np.array([[w.get(t, 0.0) for t in tickers] for _, w in changes], dtype=np.float64)
    return times, list(tickers), matrix


def weights_chart(data: ReportData, x_range: TimeRange, zone: ZoneInfo) -> Figure | None:
    """The weights over time as a stacked area; None when no weights are known."""
    times, tickers, matrix = _weight_steps(data, data.metrics[0].timestamp_ms)
    if not times:
        return None
    rows = math.ceil(len(tickers) / _LEGEND_COLUMNS)
    figure = _figure(3.4 + 0.22 * rows, top_in=0.15 + 0.22 * rows)
    ax = figure.add_subplot()
    # Hold the last weights to the right edge, so the final segment is drawn.
    x = np.append(instants(times), x_range[1])
    stacked = np.vstack([matrix, matrix[-1]]).T
    colours = [_colour(i) for i in range(len(tickers))]
    ax.stackplot(x, stacked, labels=tickers, colors=colours, step="post", alpha=0.9)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, max(1.0, float(stacked.sum(axis=0).max())))
    ax.set_ylabel("weight")
    # Above the plot, not beside it: the plot area keeps the width of the other charts.
    ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        fontsize="small",
        frameon=False,
        ncols=min(len(tickers), _LEGEND_COLUMNS),
    )
    _dress_time_axis(figure, x_range, zone)
    return figure


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def x_range_of(data: ReportData) -> TimeRange:
    """The x range the charts share (half an hour either side of a single point in time)."""
    # From the first metrics on (earlier weights are drawn from there), to the last record.
    first = data.metrics[0].timestamp_ms
    last = max([data.metrics[-1].timestamp_ms, *(w.timestamp_ms for w in data.weights)])
    lo, hi = instants([first, last])
    if lo == hi:
        pad = np.timedelta64(int(_PAD.total_seconds()), "s")
        lo, hi = lo - pad, hi + pad
    return lo, hi
