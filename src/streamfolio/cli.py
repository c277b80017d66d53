"""The ``streamfolio`` command line."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from streamfolio import __version__
from streamfolio.errors import StreamfolioError

if TYPE_CHECKING:
    from streamfolio.config import Settings
    from streamfolio.replay import ReplayEvent

app = typer.Typer(
    name="streamfolio",
    help="Real-time portfolio optimisation over streaming market data (Kafka + PyFlink).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="STREAMFOLIO_CONFIG",
        help="YAML configuration (see examples/cse.yaml). Also $STREAMFOLIO_CONFIG.",
        show_default=False,
    ),
]


def _fail(error: Exception) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _settings(config: Path | None, *, example_if_missing: bool = False) -> Settings:
    from streamfolio.config import example_config_path, load_config

    if config is None and example_if_missing:
        config = example_config_path()
    return load_config(config)


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
) -> None:
    """Compute each portfolio's initial statistics and weights from a price history.

    Statistics are the mean and unbiased covariance of daily log returns, scaled to the
    portfolio's bar. Weights are the configured ones, else Black-Litterman + max-Sharpe.
    """
    from streamfolio.state import initial_state

    try:
        settings = _settings(config)
        state = initial_state(settings, history=history, index=index, progress=_progress)
    except (StreamfolioError, ValueError) as error:
        raise _fail(error) from None
    text = json.dumps(state, indent=2, allow_nan=False)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")
        typer.echo(
            f"wrote initial state of {len(state['portfolios'])} portfolio(s) to {out}", err=True
        )


def _progress(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
def replay(
    prices: Annotated[
        Path, typer.Option(help="Ticks, CSV `time,ticker,price[,volume]`, ISO-8601 times.")
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
        settings = _settings(config)
        events = run_replay(
            settings, prices=prices, state_path=state, rebalance=rebalance, progress=_progress
        )
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
        settings = _settings(config, example_if_missing=True)
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
    bars: Annotated[int, typer.Option(min=10, help="Bars to simulate.")] = 600,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
) -> None:
    """Run the example portfolios end to end offline: init, simulated ticks, replay, summary."""
    import tempfile

    from streamfolio.state import run_replay, simulated_ticks_csv, summarise

    try:
        settings = _settings(config, example_if_missing=True)
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


def _finite(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


if __name__ == "__main__":  # pragma: no cover
    app()
