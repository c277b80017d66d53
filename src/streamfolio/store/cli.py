"""The ``streamfolio store`` and ``streamfolio report`` commands.

Register them on the main app with :func:`register` (or ``app.command("store")(store_command)``
and ``app.command("report")(report_command)``).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from streamfolio.cli_support import (
    ConfigOption,
    command_errors,
    config_option,
    load_settings,
    one_of,
    parse_time,
    say,
)
from streamfolio.errors import UsageError
from streamfolio.observability.options import LogFormatOption, MetricsPortOption
from streamfolio.store import DEFAULT_DATABASE

__all__ = ["register", "report_command", "store_command"]

DatabaseOption = Annotated[
    str,
    typer.Option(
        "--database",
        envvar="STREAMFOLIO_DATABASE",
        help="History database URL: sqlite:///path.db (relative to the working directory) or "
        "postgresql://user:password@host/dbname. Also $STREAMFOLIO_DATABASE.",
    ),
]
ReportConfigOption = Annotated[
    Path | None,
    config_option(
        None,
        help="YAML configuration, if any; also $STREAMFOLIO_CONFIG. Supplies the time zone "
        "(the exchange's) and the Sharpe threshold when the stored metrics carry none.",
    ),
]


def store_command(
    config: ConfigOption = None,
    database: DatabaseOption = DEFAULT_DATABASE,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds (default: run on).")
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            help="Re-read every topic from its oldest message, even where the group has "
            "committed offsets (rebuilds the history; stored rows are replaced, not doubled). "
            "Without it a new group also starts at the oldest message, and a known one resumes."
        ),
    ] = False,
    group: Annotated[str, typer.Option(help="Kafka consumer group.")] = "streamfolio-store",
    batch_size: Annotated[
        int, typer.Option(min=1, help="Most messages per database transaction.")
    ] = 500,
    batch_seconds: Annotated[
        float, typer.Option(min=0.01, help="Longest wait before a partial batch is written.")
    ] = 1.0,
    status_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between status lines.")
    ] = 10.0,
    metrics_port: MetricsPortOption = None,
    log_format: LogFormatOption = "text",
) -> None:
    """Keep the pipeline's history: statistics, metrics, weights and rebalance decisions.

    Consumes their topics (group streamfolio-store, read_committed) into a SQLite file or a
    PostgreSQL database. Each batch is one transaction, and Kafka offsets are committed only
    after it, so a crash re-reads rather than loses; rows are keyed by portfolio and time
    (decisions by event id), so re-reading replaces rather than duplicates. Messages that do not
    decode, are invalid, or that the database refuses (too long, a NUL character, out of range)
    are counted and sent to the dead-letter topic; the rest of their batch is stored. Ctrl-C (or
    SIGTERM) stops after storing what was read.
    """
    from streamfolio.kafka.outage import broker_watch
    from streamfolio.observability.logs import use_log_format
    from streamfolio.observability.metrics import start_metrics
    from streamfolio.store.service import StoreOptions, run_store

    with command_errors():
        use_log_format(log_format)
    broker_watch("store")

    stop = threading.Event()

    def _terminate(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with command_errors(interrupted=130):
            options = StoreOptions(
                database=database,
                group_id=group,
                from_beginning=from_beginning,
                duration_s=duration,
                batch_size=batch_size,
                batch_seconds=batch_seconds,
                status_interval_s=status_interval,
            )
            settings = load_settings(config)
            start_metrics(settings, "store", metrics_port)
            stats = run_store(settings, options, stop=stop, progress=say)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    say(f"store stopped: {stats.line()}")


def report_command(
    portfolio: Annotated[str, typer.Argument(help="Portfolio id.", show_default=False)],
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start, ISO-8601 (2026-10-01 or 2026-10-01T09:30Z; no offset: UTC). "
            "Default: the first record.",
            show_default=False,
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="End, inclusive; a bare date includes that whole day. Default: the last record.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    database: DatabaseOption = DEFAULT_DATABASE,
    timezone: Annotated[
        str | None,
        typer.Option(
            help="Time zone of the times shown (IANA name). Default: the exchange's from "
            "--config if given, else UTC.",
            show_default=False,
        ),
    ] = None,
    image_format: Annotated[
        str, typer.Option("--image-format", help="png (smaller) or svg (sharp at any zoom).")
    ] = "png",
    config: ReportConfigOption = None,
) -> None:
    """Write one portfolio's history as a self-contained HTML page (no network needed).

    Sharpe ratio over time against its threshold, expected return and risk, weights as a
    stacked area, and the table of rebalancing decisions (time, reason, Sharpe before and
    after, turnover). With --config, the portfolio's configured Sharpe threshold is drawn when
    the stored metrics carry none.
    """
    from streamfolio.store.report import write_report

    with command_errors():
        one_of(image_format, ("png", "svg"), "--image-format")
        for given, option in ((start, "--from"), (end, "--to")):
            if given is not None:
                parse_time(given, option)
        if timezone is not None:
            _check_zone(timezone)
        threshold = None
        zone = timezone or "UTC"
        if config is not None:
            settings = load_settings(config)
            zone = timezone or settings.exchange.timezone
            configured = {p.id: p for p in settings.portfolios}
            if portfolio in configured:
                threshold = configured[portfolio].policy.sharpe_threshold
        data = write_report(
            database,
            portfolio,
            out,
            start,
            end,
            timezone=zone,
            image_format="svg" if image_format == "svg" else "png",
            threshold=threshold,
        )
    decided = sum(e.decision == "rebalance" for e in data.events)
    say(
        f"wrote {out}: {len(data.metrics)} metrics updates, {len(data.weights)} weight sets, "
        f"{len(data.events)} decisions ({decided} rebalances)"
    )


def _check_zone(timezone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"--timezone: unknown time zone {timezone!r} "
            "(fix: use an IANA name such as UTC or Africa/Casablanca)"
        ) from None


def register(app: typer.Typer) -> None:
    """Add ``store`` and ``report`` to ``app``."""
    app.command("store")(store_command)
    app.command("report")(report_command)
