"""``streamfolio report``: one portfolio's history as a self-contained HTML page.

The page has a summary, three charts (Sharpe ratio against its threshold with the rebalances
marked; expected return and risk; weights over time as a stacked area) and the table of the
rebalancer's decisions. Charts are drawn by matplotlib's Agg renderer (no display, no pyplot
state) and embedded as ``data:`` URIs, so the file opens anywhere, offline, and can be mailed as
one attachment: it loads no script, stylesheet, font or image from anywhere.

>>> from streamfolio.messages import PortfolioMetrics
>>> from streamfolio.store.schema import open_store
>>> from streamfolio.store.writer import StoreWriter
>>> db = open_store("sqlite://")
>>> metrics = PortfolioMetrics("p1", 0.2, 0.1, 0.4, 1_790_000_000_000, weights={"ATW": 1.0})
>>> _ = StoreWriter(db).write([metrics])
>>> page = render_report(load_report(db, "p1"))
>>> page.count('src="data:image/png;base64,')
3
>>> load_report(db, "p2")
Traceback (most recent call last):
...
streamfolio.store.report.ReportError: portfolio 'p2' has no metrics in sqlite://; \
portfolios with metrics: p1
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from streamfolio import __version__
from streamfolio.store import queries
from streamfolio.store.queries import (
    Database,
    MetricsRow,
    RebalanceRow,
    TimeLike,
    WeightsRow,
    epoch_ms,
)
from streamfolio.store.schema import StoreError, safe_url

__all__ = [
    "ImageFormat",
    "ReportData",
    "ReportError",
    "load_report",
    "render_report",
    "write_report",
]

ImageFormat = Literal["png", "svg"]
_Times: TypeAlias = npt.NDArray[np.datetime64]

_WIDTH_IN: Final = 10.0
_LEFT_IN: Final = 0.85  # room for the y label and tick labels such as "100%"
_RIGHT_IN: Final = 0.2
_BOTTOM_IN: Final = 0.6  # room for two lines of concise date labels
_DPI: Final = 110
_PAD: Final = dt.timedelta(minutes=30)  # x range around a single point in time
_REBALANCE: Final = "rebalance"
_PALETTE: Final = (
    # Tableau 10, then more of matplotlib's tab20, so a dozen tickers keep distinct colours.
    *("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"),
    *("#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94"),
    *("#f7b6d2", "#dbdb8d", "#9edae5", "#393b79"),
)
_MAX_MARKERS: Final = 300
_LEGEND_COLUMNS: Final = 10  # beyond this many rebalances, vertical lines hide the Sharpe curve


class ReportError(StoreError):
    """A report cannot be made (no data for the portfolio in the range, a bad time zone...)."""


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything one report shows, read from the history database."""

    portfolio_id: str
    start_ms: int | None
    end_ms: int | None
    metrics: list[MetricsRow]
    weights: list[WeightsRow]
    """Weight changes in the range, the first one being those in force at its start."""
    events: list[RebalanceRow]
    threshold: float | None
    """Sharpe threshold to draw when the metrics do not carry one."""
    source: str
    """The database, password masked."""


def _utc_text(timestamp_ms: int) -> str:
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=timestamp_ms)
    return instant.isoformat().replace("+00:00", "Z")


def load_report(
    db: Database,
    portfolio_id: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    threshold: float | None = None,
) -> ReportData:
    """Read what the report of ``portfolio_id`` between ``start`` and ``end`` shows.

    Raises :class:`ReportError` when the portfolio has no metrics there, saying which
    portfolios, or which times, do have some.
    """
    start_ms = None if start is None else epoch_ms(start)
    end_ms = None if end is None else epoch_ms(end, end=True)
    engine = queries.engine_of(db)
    source = safe_url(engine.url)
    metrics = queries.metrics_between(engine, portfolio_id, start_ms, end_ms)
    if not metrics:
        raise ReportError(_no_data(engine, portfolio_id, start_ms, end_ms, source))
    weights = queries.weights_history(engine, portfolio_id, start_ms, end_ms)
    first_ms = metrics[0].timestamp_ms if start_ms is None else start_ms
    if not weights or weights[0].timestamp_ms > first_ms:
        before = queries.weights_at(engine, portfolio_id, first_ms)
        if before is not None:
            weights.insert(0, before)
    events = queries.rebalances(engine, portfolio_id, start_ms, end_ms)
    return ReportData(portfolio_id, start_ms, end_ms, metrics, weights, events, threshold, source)


def _no_data(
    db: Database, portfolio_id: str, start_ms: int | None, end_ms: int | None, source: str
) -> str:
    if start_ms is None and end_ms is None:
        where = ""
    else:
        lo = "the beginning" if start_ms is None else _utc_text(start_ms)
        hi = "the end" if end_ms is None else _utc_text(end_ms)
        where = f" between {lo} and {hi}"
    message = f"portfolio {portfolio_id!r} has no metrics{where} in {source}"
    span = queries.metrics_span(db, portfolio_id)
    if span is not None:
        first, last = (t.isoformat().replace("+00:00", "Z") for t in span)
        return message + f"; its metrics run from {first} to {last}"
    known = [m.portfolio_id for m in queries.latest_metrics(db)]
    if known:
        return message + f"; portfolios with metrics: {', '.join(known)}"
    return message + "; the database has no metrics at all: is `streamfolio store` running?"


# -------------------------------------------------------------------------------------- charts


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(
            f"unknown time zone {timezone!r}: use an IANA name such as UTC or Africa/Casablanca"
        ) from None


def _instants(timestamps_ms: Sequence[int]) -> _Times:
    # Plotted as UTC instants and only *labelled* in the report's zone: wall-clock values would
    # run backwards where the clocks go back (Casablanca does so every Ramadan).
    instants: _Times = np.asarray(timestamps_ms, dtype=np.int64).astype("datetime64[ms]")
    return instants


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


def _dress_time_axis(
    figure: Figure, x_range: tuple[np.datetime64, np.datetime64], zone: ZoneInfo
) -> None:
    for ax in figure.axes:
        locator = mdates.AutoDateLocator(tz=zone)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        formatter = mdates.ConciseDateFormatter(locator, tz=zone)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(formatter)
        ax.set_xlim(x_range[0], x_range[1])  # type: ignore[arg-type]
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)


def _embed(figure: Figure, alt: str, image_format: ImageFormat) -> str:
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


def _sharpe_chart(
    data: ReportData, x: _Times, x_range: tuple[np.datetime64, np.datetime64], zone: ZoneInfo
) -> Figure:
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
    done = [e for e in data.events if e.decision == _REBALANCE][:_MAX_MARKERS]
    for i, when in enumerate(_instants([e.timestamp_ms for e in done])):
        ax.axvline(when, color="tab:green", alpha=0.5, lw=0.9, label="rebalance" if i == 0 else "")
    ax.set_ylabel("Sharpe ratio (annualised)")
    ax.legend(loc="best", fontsize="small", frameon=False)
    _dress_time_axis(figure, x_range, zone)
    return figure


def _return_risk_chart(
    data: ReportData, x: _Times, x_range: tuple[np.datetime64, np.datetime64], zone: ZoneInfo
) -> Figure:
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


def _weights_chart(
    data: ReportData, x_range: tuple[np.datetime64, np.datetime64], zone: ZoneInfo
) -> Figure | None:
    times, tickers, matrix = _weight_steps(data, data.metrics[0].timestamp_ms)
    if not times:
        return None
    rows = math.ceil(len(tickers) / _LEGEND_COLUMNS)
    figure = _figure(3.4 + 0.22 * rows, top_in=0.15 + 0.22 * rows)
    ax = figure.add_subplot()
    # Hold the last weights to the right edge, so the final segment is drawn.
    x = np.append(_instants(times), x_range[1])
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


def _x_range(data: ReportData) -> tuple[np.datetime64, np.datetime64]:
    # From the first metrics on (earlier weights are drawn from there), to the last record.
    first = data.metrics[0].timestamp_ms
    last = max([data.metrics[-1].timestamp_ms, *(w.timestamp_ms for w in data.weights)])
    lo, hi = _instants([first, last])
    if lo == hi:
        pad = np.timedelta64(int(_PAD.total_seconds()), "s")
        lo, hi = lo - pad, hi + pad
    return lo, hi


# ---------------------------------------------------------------------------------------- HTML

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1180px;padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#666;font-size:.9rem}
table{border-collapse:collapse;font-size:.9rem;margin:.6rem 0}
th,td{padding:.3rem .7rem;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.nowrap{white-space:nowrap}tr.rebalance td{background:#f3faf3}
img{max-width:100%;height:auto;display:block}
.empty{color:#777;font-style:italic}
"""


def _pct(value: float) -> str:
    return f"{value:.2%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _when(timestamp_ms: int, zone: ZoneInfo) -> str:
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=timestamp_ms)
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _main_changes(event: RebalanceRow, limit: int = 3) -> str:
    tickers = dict.fromkeys([*event.old_weights, *event.new_weights])
    moves = [(t, event.new_weights.get(t, 0.0) - event.old_weights.get(t, 0.0)) for t in tickers]
    moves = sorted((m for m in moves if abs(m[1]) >= 5e-5), key=lambda m: -abs(m[1]))[:limit]
    return ", ".join(f"{t} {d * 100:+.1f} pp" for t, d in moves) or "none"


def _summary_rows(data: ReportData, zone: ZoneInfo) -> list[tuple[str, str]]:
    metrics = data.metrics
    sharpe = np.array([m.sharpe_ratio for m in metrics])
    last = metrics[-1]
    rows = [
        ("metrics updates", f"{len(metrics)}"),
        (
            "first / last update",
            f"{_when(metrics[0].timestamp_ms, zone)} / {_when(last.timestamp_ms, zone)}",
        ),
        (
            "Sharpe ratio: last / min / mean / max",
            f"{last.sharpe_ratio:.3f} / {sharpe.min():.3f} / {sharpe.mean():.3f} / "
            f"{sharpe.max():.3f}",
        ),
    ]
    thresholds = [m.sharpe_threshold for m in metrics]
    below = [
        s < (t if t is not None else data.threshold)
        for s, t in zip(sharpe, thresholds, strict=True)
        if t is not None or data.threshold is not None
    ]
    if below:
        rows.append(
            ("updates below the threshold", f"{sum(below)} ({sum(below) / len(below):.1%})")
        )
    rows += [
        ("expected return (last, annualised)", _pct(last.expected_return)),
        ("risk (last, annualised volatility)", _pct(last.risk)),
    ]
    decided = [e for e in data.events if e.decision == _REBALANCE]
    rows.append(("rebalances", f"{len(decided)}"))
    if len(data.events) > len(decided):
        rows.append(("other decisions (holds)", f"{len(data.events) - len(decided)}"))
    if decided:
        rows.append(("total turnover", _pct(sum(e.turnover for e in decided))))
    return rows


def _table(
    headers: Iterable[tuple[str, bool]] | None, rows: Iterable[tuple[list[str], str]]
) -> str:
    head = "".join(
        f'<th class="num">{html.escape(h)}</th>' if numeric else f"<th>{html.escape(h)}</th>"
        for h, numeric in headers or ()
    )
    body = []
    for cells, css in rows:
        tds = "".join(cells)
        body.append(f'<tr class="{css}">{tds}</tr>' if css else f"<tr>{tds}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def _td(value: str, numeric: bool = False, *, nowrap: bool = False) -> str:
    classes = " ".join(c for c, on in (("num", numeric), ("nowrap", nowrap)) if on)
    css = f' class="{classes}"' if classes else ""
    return f"<td{css}>{html.escape(value)}</td>"


def _events_table(events: Sequence[RebalanceRow], zone: ZoneInfo) -> str:
    if not events:
        return '<p class="empty">No rebalancing decision in this period.</p>'
    headers = [
        ("time", False),
        ("decision", False),
        ("reason", False),
        ("Sharpe before", True),
        ("Sharpe after", True),
        ("turnover", True),
        ("main weight changes", False),
        ("optimiser", False),
    ]
    rows = [
        (
            [
                _td(_when(e.timestamp_ms, zone), nowrap=True),
                _td(e.decision),
                _td(e.reason),
                _td(_num(e.sharpe_before), True),
                _td(_num(e.sharpe_after), True),
                _td(_pct(e.turnover), True),
                _td(_main_changes(e)),
                _td(e.optimizer_status or "–"),
            ],
            "rebalance" if e.decision == _REBALANCE else "",
        )
        for e in events
    ]
    return _table(headers, rows)


def render_report(
    data: ReportData, *, timezone: str = "UTC", image_format: ImageFormat = "png"
) -> str:
    """The report page for ``data``: one HTML document, charts embedded, times in ``timezone``."""
    if image_format not in ("png", "svg"):
        raise ReportError(f"image format must be png or svg, not {image_format!r}")
    zone = _zone(timezone)
    x = _instants([m.timestamp_ms for m in data.metrics])
    x_range = _x_range(data)
    pid = html.escape(data.portfolio_id)
    sharpe = _embed(_sharpe_chart(data, x, x_range, zone), "Sharpe ratio over time", image_format)
    risk = _embed(
        _return_risk_chart(data, x, x_range, zone),
        "Expected return and risk over time",
        image_format,
    )
    weights_figure = _weights_chart(data, x_range, zone)
    weights = (
        _embed(weights_figure, "Weights over time", image_format)
        if weights_figure is not None
        else '<p class="empty">No weights stored for this portfolio.</p>'
    )
    summary = _table(
        None,
        (([_td(k), _td(v)], "") for k, v in _summary_rows(data, zone)),
    )
    lo = "the first record" if data.start_ms is None else _when(data.start_ms, zone)
    hi = "the last record" if data.end_ms is None else _when(data.end_ms, zone)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="streamfolio {html.escape(__version__)}">
<title>streamfolio report: {pid}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Portfolio {pid}</h1>
<p class="meta">From {html.escape(lo)} to {html.escape(hi)}; times in {html.escape(timezone)}.
Data: {html.escape(data.source)}. Generated {generated} by streamfolio {html.escape(__version__)}.
</p>
<h2>Summary</h2>
{summary}
<h2>Sharpe ratio</h2>
{sharpe}
<h2>Expected return and risk</h2>
{risk}
<h2>Weights</h2>
{weights}
<h2>Rebalancing decisions</h2>
{_events_table(data.events, zone)}
</body>
</html>
"""


def write_report(
    db: Database,
    portfolio_id: str,
    out: Path,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    timezone: str = "UTC",
    image_format: ImageFormat = "png",
    threshold: float | None = None,
) -> ReportData:
    """Write the report of ``portfolio_id`` to ``out``; returns what it shows."""
    _zone(timezone)  # a bad zone fails before the database is read
    data = load_report(db, portfolio_id, start, end, threshold=threshold)
    page = render_report(data, timezone=timezone, image_format=image_format)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return data
