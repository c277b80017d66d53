"""``streamfolio init`` and ``streamfolio simulate``: the portfolios' initial state, and a seeded
tick file calibrated on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamfolio.cli_support import ConfigOption, command_errors, load_settings, say

__all__ = ["init", "simulate"]


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

    with command_errors():
        settings = load_settings(config)
        state = initial_state(settings, history=history, index=index, progress=say)
        if publish:
            publish_state(settings, state, progress=say)
    text = json.dumps(state, indent=2, allow_nan=False)
    if out is not None:
        out.write_text(text + "\n")
        say(f"wrote initial state of {len(state['portfolios'])} portfolio(s) to {out}")
    elif not publish:
        typer.echo(text)


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

    with command_errors():
        settings = load_settings(config)
        n = simulated_ticks_csv(
            settings,
            out,
            bars=bars,
            ticks_per_bar=ticks_per_bar,
            regime_change=regime_change,
            seed=seed,
            progress=say,
        )
    say(f"wrote {n} ticks to {out}")
