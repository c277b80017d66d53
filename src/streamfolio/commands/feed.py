"""``streamfolio feed`` and ``streamfolio fetch-history``: publish price ticks to the prices
topic (simulated, replayed from a CSV, from the exchange, or heartbeats only), and fetch the
exchange's daily history for ``init``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from streamfolio.cli_support import (
    ConfigOption,
    command_errors,
    configure_logging,
    load_settings,
    one_of,
    parse_time,
    say,
)
from streamfolio.errors import UsageError
from streamfolio.observability.options import LogFormatOption, MetricsPortOption

__all__ = ["feed", "fetch_history_command"]


def feed(
    source: Annotated[
        str,
        typer.Option(
            help="sim (simulator), replay (a tick CSV), cse (the exchange), or heartbeats "
            "(no ticks: heartbeats only, next to a producer that sends none)."
        ),
    ] = "sim",
    config: ConfigOption = None,
    rate: Annotated[
        float, typer.Option(help="sim: ticks per second of event time, published at that pace.")
    ] = 20.0,
    fast: Annotated[
        bool,
        typer.Option(
            help="sim: publish as fast as possible (event time still advances at --rate)."
        ),
    ] = False,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds.")
    ] = None,
    max_ticks: Annotated[
        int | None, typer.Option(min=0, help="Stop after this many ticks.")
    ] = None,
    price_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="tick (PriceTick) or bourse (reference BourseData); default flink.price_format.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="sim: random seed.")] = 7,
    start: Annotated[
        str | None, typer.Option(help="sim: event time of the first tick, ISO-8601 (default: now).")
    ] = None,
    calibration: Annotated[
        str,
        typer.Option(
            help="sim: reference (reference project covariance) or history (bundled CSE history)."
        ),
    ] = "reference",
    drift: Annotated[float, typer.Option(help="sim: annual log drift of every ticker.")] = 0.10,
    regime_change_after: Annotated[
        float | None,
        typer.Option(
            help="sim: after this many seconds (wall time at --speedup) the --crash starts."
        ),
    ] = None,
    crash: Annotated[
        str, typer.Option(help="sim: comma-separated tickers that crash (default: all).")
    ] = "",
    crash_drift: Annotated[
        float, typer.Option(help="sim: annual log drift of the crashed tickers.")
    ] = -0.8,
    speedup: Annotated[
        float,
        typer.Option(min=0.001, help="sim: event time runs this many times faster than wall time."),
    ] = 1.0,
    out_of_order: Annotated[
        float,
        typer.Option(
            help="sim: share of ticks stamped earlier, within the out-of-orderness bound."
        ),
    ] = 0.0,
    late: Annotated[
        float, typer.Option(help="sim: share of ticks stamped late (beyond the bound and a bar).")
    ] = 0.0,
    prices: Annotated[
        Path | None, typer.Option(help="replay: the tick CSV `time,ticker,price[,volume]`.")
    ] = None,
    speed: Annotated[
        float,
        typer.Option(help="replay: 1 = real time, 10 = ten times faster, 0 = as fast as possible."),
    ] = 0.0,
    interval: Annotated[float, typer.Option(help="cse: seconds between polls.")] = 2.0,
    all_hours: Annotated[
        bool, typer.Option(help="cse: poll outside the exchange's sessions too.")
    ] = False,
    lag_ms: Annotated[
        int | None,
        typer.Option(
            "--lag-ms",
            min=0,
            help="heartbeats, cse: heartbeats promise nothing older than the wall clock minus "
            "this (default: feed.heartbeat_lag_ms).",
            show_default=False,
        ),
    ] = None,
    metrics_port: MetricsPortOption = None,
    log_format: LogFormatOption = "text",
) -> None:
    """Publish price ticks to the prices topic: simulated, replayed from a CSV, or from the CSE.

    Ticks are keyed by ticker, carry their event time as the Kafka timestamp, and go out with
    acks=all and idempotence. Bad ticks (unknown ticker, non-positive price, schema misfit) go to
    the dead-letter topic with a reason. Every feed.heartbeat_ms (config; 0: none) a heartbeat
    goes to every partition: nothing older than its time follows there.

    While the broker is away nothing is lost: ticks and heartbeats wait in the producer's
    memory (up to 1,000,000 messages or queue.buffering.max.kbytes, whichever comes first;
    then the source pauses: sim and replay resume where they were, the CSE poller resumes with
    the exchange's quotes of the moment, those it did not poll are gone), and go out when it
    is back. The outage is logged once, then once a minute. Ctrl-C, SIGTERM or SIGHUP stops
    within 5 s: what the broker has not acknowledged after 2 s is kept in feed.spool_dir and
    published first by the next run on the same prices topic (docs/outage.md).

    --source heartbeats is the compatibility mode of a producer that sends no heartbeats (the
    reference's BourseData producer): run it next to that producer. It publishes no ticks, only
    a heartbeat on every partition every feed.heartbeat_ms, with T = the wall clock minus
    feed.heartbeat_lag_ms (--lag-ms), never decreasing. Its limits: a tick that reaches the
    topic more than the lag + flink.max_out_of_orderness_ms after its trade time is
    dead-lettered late (when its bar has ended by then); bars close the lag + that bound after
    their end in real time; it assumes the producer's event times follow the wall clock (live
    quotes), so it cannot replay history: use --source replay for that.
    """
    from streamfolio.feeds.options import FeedOptions
    from streamfolio.feeds.run import run_feed
    from streamfolio.kafka.outage import broker_watch
    from streamfolio.observability.logs import use_log_format
    from streamfolio.observability.metrics import start_metrics

    configure_logging()
    with command_errors():
        use_log_format(log_format)
    broker_watch("feed")

    with command_errors():
        _check_feed_options(source, price_format, calibration, start, prices, max_ticks)
    options = FeedOptions(
        source=source,
        rate=rate,
        fast=fast,
        duration_s=duration,
        max_ticks=max_ticks,
        price_format=price_format,
        seed=seed,
        start=start,
        calibration=calibration,
        drift=drift,
        regime_change_after_s=regime_change_after,
        crash=tuple(t.strip() for t in crash.split(",") if t.strip()),
        crash_drift=crash_drift,
        speedup=speedup,
        out_of_order=out_of_order,
        late=late,
        prices=prices,
        speed=speed,
        interval_s=interval,
        all_hours=all_hours,
        lag_ms=lag_ms,
    )
    with command_errors():
        settings = load_settings(config)
        start_metrics(settings, "feed", metrics_port)
        stats = run_feed(settings, options, progress=say)
    say(f"feed stopped: {stats.line()}")


def _check_feed_options(
    source: str,
    price_format: str | None,
    calibration: str,
    start: str | None,
    prices: Path | None,
    max_ticks: int | None,
) -> None:
    """Refuse option values ``feed`` cannot use, naming the option and the fix."""
    one_of(source, ("sim", "replay", "cse", "heartbeats"), "--source")
    if price_format is not None:
        one_of(price_format, ("tick", "bourse"), "--format")
    one_of(calibration, ("reference", "history"), "--calibration")
    if start is not None:
        parse_time(start, "--start")
    if source == "replay" and prices is None:
        raise UsageError("--source replay needs --prices FILE (CSV time,ticker,price[,volume])")
    if source == "heartbeats" and max_ticks is not None:
        raise UsageError(
            "--source heartbeats publishes no ticks: stop it with --duration or Ctrl-C, "
            "not --max-ticks"
        )


def fetch_history_command(
    config: ConfigOption = None,
    out: Annotated[Path, typer.Option(help="History CSV to write.")] = Path("history.csv"),
    index_out: Annotated[
        Path | None,
        typer.Option("--index-out", help="MASI closes CSV to write (for init --index)."),
    ] = Path("masi.csv"),
    since: Annotated[
        str | None,
        typer.Option("--from", help="First session, YYYY-MM-DD (default: all, ~3 years)."),
    ] = None,
) -> None:
    """Fetch the configured tickers' daily history and the MASI from the exchange's website.

    Writes the files `streamfolio init --history --index` reads. TLS is verified, with the
    exchange's missing intermediate certificate shipped in the package.
    """
    from streamfolio.feeds.cse import CseClient
    from streamfolio.feeds.fetch import fetch_history

    with command_errors():
        start = _session(since) if since else None
        settings = load_settings(config)
        tickers = sorted({t for p in settings.portfolios for t in p.tickers})
        with CseClient(calendar=settings.exchange.calendar()) as client:
            fetched = fetch_history(client, tickers, out, index_out, start=start, progress=say)
    say(
        f"wrote {fetched.history_rows} closes to {out}"
        + (f" and {fetched.index_rows} index levels to {index_out}" if index_out else "")
    )


def _session(text: str) -> dt.date:
    """The date of ``--from``, else a :class:`UsageError` that says how to write it.

    >>> _session("2024-01-02")
    datetime.date(2024, 1, 2)
    """
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--from: {text!r} is not a date (fix: write it like 2024-01-02)"
        ) from None
