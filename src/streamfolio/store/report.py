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
streamfolio.store.report_data.ReportError: portfolio 'p2' has no metrics in sqlite://; \
portfolios with metrics: p1
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from streamfolio import __version__
from streamfolio.store.queries import Database
from streamfolio.store.records import RebalanceRow, TimeLike
from streamfolio.store.report_charts import (
    ImageFormat,
    embed,
    instants,
    return_risk_chart,
    sharpe_chart,
    weights_chart,
    x_range_of,
)
from streamfolio.store.report_data import REBALANCE, ReportData, ReportError, load_report

__all__ = [
    "ImageFormat",
    "ReportData",
    "ReportError",
    "load_report",
    "render_report",
    "write_report",
]


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(
            f"unknown time zone {timezone!r}: use an IANA name such as UTC or Africa/Casablanca"
        ) from None


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
    decided = [e for e in data.events if e.decision == REBALANCE]
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
            "rebalance" if e.decision == REBALANCE else "",
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
    x = instants([m.timestamp_ms for m in data.metrics])
    x_range = x_range_of(data)
    pid = html.escape(data.portfolio_id)
    sharpe = embed(sharpe_chart(data, x, x_range, zone), "Sharpe ratio over time", image_format)
    risk = embed(
        return_risk_chart(data, x, x_range, zone),
        "Expected return and risk over time",
        image_format,
    )
    weights_figure = weights_chart(data, x_range, zone)
    weights = (
        embed(weights_figure, "Weights over time", image_format)
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
