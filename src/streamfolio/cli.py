"""The ``streamfolio`` command line."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from streamfolio import __version__
from streamfolio.cli_support import ConfigOption, load_settings
from streamfolio.cli_support import fail as _fail
from streamfolio.cli_support import say as _progress
from streamfolio.errors import StreamfolioError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streamfolio.config import Settings
    from streamfolio.replay import ReplayEvent, Tick

app = typer.Typer(
    name="streamfolio",
    help="Real-time portfolio optimisation over streaming market data (Kafka + PyFlink).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"streamfolio {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Real-time portfolio optimisation over streaming market data (Kafka + PyFlink)."""


@app.command()
def init(
    config: ConfigOption = None,
    history: Annotated[
        Path | None,
        typer.Option(
            help="Daily closes, CSV `time,ticker,price[,volume]`. Default: bundled CSE history."
        ),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            help="Market index closes (same layout) for the risk aversion. Default: bundled MASI."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the state JSON here (default: stdout).")
    ] = None,
    publish: Annotated[
        bool, typer.Option(help="Send the statistics and weights to their Kafka topics too.")
    ] = False,
) -> None:
    """Compute each portfolio's initial statistics and weights from a price history.

    Statistics are the mean and unbiased covariance of daily log returns, scaled to the
    portfolio's bar. Weights are the configured ones, else Black-Litterman + max-Sharpe.
    With --publish and no --config, the example configuration and its bundled history are used.
    """
    from streamfolio.state import initial_state, publish_state

    try:
        settings = load_settings(config)
        state = initial_state(settings, history=history, index=index, progress=_progress)
        if publish:
            publish_state(settings, state, progress=_progress)
    except (StreamfolioError, ValueError) as error:
        raise _fail(error) from None
    text = json.dumps(state, indent=2, allow_nan=False)
    if out is not None:
        out.write_text(text + "\n")
        typer.echo(
            f"wrote initial state of {len(state['portfolios'])} portfolio(s) to {out}", err=True
        )
    elif not publish:
        typer.echo(text)


@app.command()
def replay(
    prices: Annotated[
        Path,
        typer.Option(
            help="Ticks, CSV `time,ticker,price[,volume][,partition]`, ISO-8601 times; "
            "`partition`: the prices topic's partition each was read from (default 0)."
        ),
    ],
    config: ConfigOption = None,
    state: Annotated[
        Path | None,
        typer.Option(help="Initial state from `streamfolio init` (default: computed now)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output file (default: stdout).")] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="jsonl (every event) or csv (metrics and weights).")
    ] = "jsonl",
    rebalance: Annotated[
        bool, typer.Option(help="Run the rebalance policy and apply its weights.")
    ] = True,
) -> None:
    """Run the analytics over a tick file offline: the reference semantics of the streaming job."""
    from streamfolio.state import run_replay

    if output_format not in ("jsonl", "csv"):
        raise _fail(ValueError(f"--format must be jsonl or csv, not {output_format!r}"))
    try:
        settings = load_settings(config)
        known = {t for p in settings.portfolios for t in p.tickers}
        partitioned = _partitioned_ticks(prices, known)
        if partitioned is None:
            events = run_replay(
                settings, prices=prices, state_path=state, rebalance=rebalance, progress=_progress
            )
        else:
            events = _replay_partitions(settings, partitioned, state, rebalance)
        stream: TextIO = sys.stdout if out is None else out.open("w", newline="")
        try:
            counts = _write_events(events, stream, output_format)
        finally:
            if out is not None:
                stream.close()
    except (StreamfolioError, ValueError) as error:
        raise _fail(error) from None
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no events"
    typer.echo(f"replay done: {summary}", err=True)


def _partitioned_ticks(path: Path, known: set[str]) -> list[Tick] | None:
    """The ticks of a tick file with a ``partition`` column, in file order; None without one.

    The other columns are read by :func:`~streamfolio.feeds.history.read_history` (same times,
    checks and messages) from a copy without the ``partition`` column.
    """
    import tempfile

    from streamfolio.errors import DataError
    from streamfolio.feeds.history import read_history
    from streamfolio.replay import Tick

    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"cannot read the tick file: {error}", str(path)) from None
    with handle, tempfile.TemporaryDirectory() as tmp:
        reader = csv.reader(handle)
        header = next(reader, None)
        names = [h.strip() for h in header or []]
        if "partition" not in names:
            return None
        column = names.index("partition")
        partitions: list[int] = []
        copy = Path(tmp) / path.name
        with copy.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(names[:column] + names[column + 1 :])
            for row in reader:
                # Blank rows stay, so that read_history's line numbers are this file's.
                if row and len(row) != len(names):
                    where = f"{path}:{reader.line_num}"
                    raise DataError(f"expected {len(names)} fields, got {len(row)}", where)
                if row:
                    text = row[column].strip()
                    if not text.isdigit():
                        where = f"{path}:{reader.line_num}"
                        raise DataError(f"bad partition {text!r}: not a number >= 0", where)
                    partitions.append(int(text))
                writer.writerow(row[:column] + row[column + 1 :])
        try:
            history = read_history(copy, known_tickers=known, ticks=True)
        except DataError as error:
            here = None if error.where is None else error.where.replace(str(copy), str(path))
            raise DataError(error.reason, here) from None
    return [
        Tick(int(t), str(s), float(p), partition)
        for t, s, p, partition in zip(
            history.times_ms, history.tickers, history.prices, partitions, strict=True
        )
    ]


def _replay_partitions(
    settings: Settings, ticks: list[Tick], state: Path | None, rebalance: bool
) -> Iterator[ReplayEvent]:
    """``run_replay`` for ticks read from several partitions: the engine waits for each."""
    from streamfolio.errors import DataError
    from streamfolio.portfolios import policy_settings, portfolio_spec
    from streamfolio.replay import ReplayEngine, ReplayPortfolio
    from streamfolio.state import initial_state, load_state

    data = load_state(state) if state else initial_state(settings, progress=_progress)
    by_id = {p["portfolio_id"]: p for p in data["portfolios"]}
    portfolios = []
    for portfolio in settings.portfolios:
        entry = by_id.get(portfolio.id)
        if entry is None:
            raise DataError(
                f"initial state has no portfolio {portfolio.id!r}; run `streamfolio init` again"
            )
        portfolios.append(
            ReplayPortfolio(
                spec=portfolio_spec(portfolio, settings.exchange),
                initial_stats=entry["stats"],
                initial_weights=entry["weights"]["weights"],
                policy=policy_settings(portfolio, settings.exchange) if rebalance else None,
            )
        )
    engine = ReplayEngine(
        portfolios,
        max_out_of_orderness_ms=settings.flink.max_out_of_orderness_ms,
        max_future_skew_ms=settings.validation.max_future_skew_ms,
        # The file's partitions are all there is: a partition it does not name holds nothing.
        partitions={tick.partition for tick in ticks} or {0},
    )
    yield from engine.run(ticks)


_CSV_COLUMNS = (
    "kind",
    "portfolio_id",
    "timestamp",
    "expected_return",
    "risk",
    "sharpe",
    "count",
    "weights",
)


def _write_events(events: Any, stream: TextIO, output_format: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    writer = csv.writer(stream) if output_format == "csv" else None
    if writer is not None:
        writer.writerow(_CSV_COLUMNS)
    event: ReplayEvent
    for event in events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
        if writer is None:
            stream.write(
                json.dumps({"type": event.kind, "key": event.key, **event.record}, allow_nan=True)
                + "\n"
            )
        elif event.kind == "metrics":
            r = event.record
            writer.writerow(
                [
                    "metrics",
                    event.key,
                    r["timestamp"],
                    r["expectedReturn"],
                    r["risk"],
                    r["sharpRatio"],
                    r["count"],
                    json.dumps(r["weights"]),
                ]
            )
        elif event.kind == "weights":
            r = event.record
            writer.writerow(
                ["weights", event.key, r["timestamp"], "", "", "", "", json.dumps(r["weights"])]
            )
    return counts


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Write ticks here as CSV `time,ticker,price`.")],
    config: ConfigOption = None,
    bars: Annotated[int, typer.Option(min=1, help="Number of bars to simulate.")] = 600,
    ticks_per_bar: Annotated[int, typer.Option(min=1, help="Ticks per ticker per bar.")] = 3,
    regime_change: Annotated[
        int | None,
        typer.Option(help="Bar at which returns turn negative (default: half-way; -1: none)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same ticks).")] = 7,
) -> None:
    """Write a seeded, correlated tick file calibrated on the portfolios' initial statistics."""
    from streamfolio.state import simulated_ticks_csv

    try:
        settings = load_settings(config)
        n = simulated_ticks_csv(
            settings,
            out,
            bars=bars,
            ticks_per_bar=ticks_per_bar,
            regime_change=regime_change,
            seed=seed,
            progress=_progress,
        )
    except (StreamfolioError, ValueError) as error:
        raise _fail(error) from None
    typer.echo(f"wrote {n} ticks to {out}", err=True)


@app.command()
def demo(
    config: ConfigOption = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    source: Annotated[str, typer.Option(help="Price feed: sim, replay or cse.")] = "sim",
    prices: Annotated[Path | None, typer.Option(help="replay: the tick CSV.")] = None,
    speed: Annotated[float, typer.Option(help="replay: 1 = real time, 0 = fast.")] = 1.0,
    port: Annotated[int, typer.Option(help="Dashboard port.")] = 8050,
    keep_topics: Annotated[
        bool, typer.Option(help="Keep what the topics hold (default: start them empty).")
    ] = False,
    offline: Annotated[
        bool, typer.Option(help="No Kafka or Flink: replay simulated ticks through the core.")
    ] = False,
    bars: Annotated[int, typer.Option(min=10, help="--offline: bars to simulate.")] = 600,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
) -> None:
    """Run the whole loop on this machine: Kafka, the streaming job, the simulator, the rebalancer,
    the store and the dashboard, with a live view per portfolio.

    The default configuration is the packaged examples/demo.yaml: the example CSE portfolios on
    daily bars, one simulated trading day every two seconds; after about 90 s the banks sell off
    and portf1 rebalances. Ctrl-C, SIGTERM, SIGHUP (closing the terminal) or --duration stops
    everything and leaves nothing running; a requested stop exits with code 0. The topics are
    emptied first, on the local broker only: pointed at another cluster the demo refuses.
    """
    from streamfolio.config import example_config_path

    path = config or example_config_path().with_name("demo.yaml")
    if offline:
        _offline_demo(path, bars, seed)
        return
    from streamfolio.demo import DemoOptions, run_demo

    options = DemoOptions(
        config_path=path,
        duration_s=duration,
        source=source,
        prices=prices,
        speed=speed,
        seed=seed,
        dashboard_port=port,
        keep_topics=keep_topics,
    )
    try:
        code = run_demo(options, progress=_progress)
    except (StreamfolioError, ValueError) as error:
        raise _fail(error) from None
    raise typer.Exit(code)


def _offline_demo(config: Path, bars: int, seed: int) -> None:
    import tempfile

    from streamfolio.state import run_replay, simulated_ticks_csv, summarise

    try:
        settings = load_settings(config)
        with tempfile.TemporaryDirectory(prefix="streamfolio-demo-") as tmp:
            ticks = Path(tmp) / "ticks.csv"
            n = simulated_ticks_csv(
                settings,
                ticks,
                bars=bars,
                ticks_per_bar=3,
                regime_change=None,
                seed=seed,
                progress=_progress,
            )
            _progress(f"simulated {n} ticks over {bars} bars (regime change half-way)")
            events = list(
                run_replay(
                    settings, prices=ticks, state_path=None, rebalance=True, progress=_progress
                )
            )
    except (StreamfolioError, ValueError) as error:
        raise _fail(error) from None
    summarise(settings, events, echo=typer.echo)


@app.command()
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
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    max_ticks: Annotated[int | None, typer.Option(help="Stop after this many ticks.")] = None,
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
        typer.Option(help="sim: event time runs this many times faster than wall time."),
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
) -> None:
    """Publish price ticks to the prices topic: simulated, replayed from a CSV, or from the CSE.

    Ticks are keyed by ticker, carry their event time as the Kafka timestamp, and go out with
    acks=all and idempotence. Bad ticks (unknown ticker, non-positive price, schema misfit) go to
    the dead-letter topic with a reason. Every feed.heartbeat_ms (config; 0: none) a heartbeat
    goes to every partition: nothing older than its time follows there. Ctrl-C stops cleanly
    after flushing what was accepted.

    --source heartbeats is the compatibility mode of a producer that sends no heartbeats (the
    reference's BourseData producer): run it next to that producer. It publishes no ticks, only
    a heartbeat on every partition every feed.heartbeat_ms, with T = the wall clock minus
    feed.heartbeat_lag_ms (--lag-ms), never decreasing. Its limits: a tick that reaches the
    topic more than the lag + flink.max_out_of_orderness_ms after its trade time is
    dead-lettered late (when its bar has ended by then); bars close the lag + that bound after
    their end in real time; it assumes the producer's event times follow the wall clock (live
    quotes), so it cannot replay history: use --source replay for that.
    """
    from streamfolio.feeds.run import FeedOptions, run_feed

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
    try:
        settings = load_settings(config)
        stats = run_feed(settings, options, progress=_progress)
    except (StreamfolioError, ValueError) as error:
        raise _fail(error) from None
    _progress(f"feed stopped: {stats.line()}")


@app.command("fetch-history")
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
    import datetime as dt

    from streamfolio.feeds.cse import CseClient
    from streamfolio.feeds.fetch import fetch_history

    try:
        settings = load_settings(config)
        tickers = sorted({t for p in settings.portfolios for t in p.tickers})
        start = dt.date.fromisoformat(since) if since else None
        with CseClient(calendar=settings.exchange.calendar()) as client:
            fetched = fetch_history(
                client, tickers, out, index_out, start=start, progress=_progress
            )
    except (StreamfolioError, ValueError) as error:
        raise _fail(error) from None
    _progress(
        f"wrote {fetched.history_rows} closes to {out}"
        + (f" and {fetched.index_rows} index levels to {index_out}" if index_out else "")
    )


topic_app = typer.Typer(
    name="topic", help="Look inside the pipeline's topics as JSON lines.", no_args_is_help=True
)
app.add_typer(topic_app)


@topic_app.command("tail")
def topic_tail(
    name: Annotated[
        str, typer.Argument(help="Topic name or role (prices, weights, metrics, ...).")
    ],
    config: ConfigOption = None,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", help="Stop after this many messages.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Stop after this many seconds without a message.")
    ] = 10.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (the only format).")
    ] = True,
) -> None:
    """Decode each message with the topic's schema; print JSON lines with key, partition, offset.

    Heartbeats on the prices topic print as {"heartbeat": {"time": ..., "source": ...}}.
    """
    from streamfolio.kafka.tools import tail

    try:
        settings = load_settings(config)
        tail(
            settings,
            name,
            from_beginning=from_beginning,
            max_records=max_records,
            timeout_s=timeout,
            emit=typer.echo,
        )
    except (StreamfolioError, KeyError) as error:
        raise _fail(error) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@topic_app.command("produce")
def topic_produce(
    name: Annotated[str, typer.Argument(help="Topic name or role.")],
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Read JSON lines from stdin (the only format).")
    ] = True,
) -> None:
    """Encode JSON lines from stdin with the topic's schema; produce them keyed as it expects.

    On the prices topic, {"heartbeat": {"time": 1750000000000, "source": "manual"}} writes a
    heartbeat on every partition, or on one with "partition": N.
    """
    from streamfolio.kafka.tools import produce

    try:
        settings = load_settings(config)
        count = produce(settings, name, sys.stdin)
    except (StreamfolioError, KeyError) as error:
        raise _fail(error) from None
    _progress(f"produced {count} message(s) to {name}")


def _register_subcommands() -> None:
    from streamfolio.flink.cli import job_app
    from streamfolio.kafka.cli import kafka_app
    from streamfolio.rebalancer.cli import rebalancer_command
    from streamfolio.store.cli import register as register_store

    app.add_typer(kafka_app)
    app.add_typer(job_app)
    register_store(app)
    app.command("rebalancer")(rebalancer_command)
    from streamfolio.dashboard.cli import dashboard_command

    app.command("dashboard")(dashboard_command)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    app()
