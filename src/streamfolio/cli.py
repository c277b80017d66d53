"""The ``streamfolio`` command line: the typer app (``streamfolio.cli:app``, the console script
``streamfolio``, and ``python -m streamfolio.cli``) and the registration of every command.

The commands live in :mod:`streamfolio.commands` (init, simulate, replay, feed, fetch-history,
topic, demo) and in the services' own ``cli`` modules (kafka, job, store, report, rebalancer,
dashboard); what they share (``--config``, errors and exit codes) is in
:mod:`streamfolio.cli_support`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streamfolio import __version__
from streamfolio.cli_support import Group, plain_flags

__all__ = ["app", "main"]

app = typer.Typer(
    name="streamfolio",
    help="Real-time portfolio optimisation over streaming market data (Kafka + PyFlink).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
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


def _register() -> None:
    from streamfolio.commands.backtest import backtest
    from streamfolio.commands.demo import demo
    from streamfolio.commands.feed import feed, fetch_history_command
    from streamfolio.commands.portfolio import portfolio_app
    from streamfolio.commands.replay import replay
    from streamfolio.commands.state import init, simulate
    from streamfolio.commands.topic import topic_app
    from streamfolio.dashboard.cli import dashboard_command
    from streamfolio.flink.cli import job_app
    from streamfolio.flink.cluster.cli import flink_app
    from streamfolio.kafka.cli import kafka_app
    from streamfolio.rebalancer.cli import rebalancer_command
    from streamfolio.store.cli import register as register_store

    app.command()(init)
    app.command()(replay)
    app.command()(backtest)
    app.command()(simulate)
    app.command()(demo)
    app.command()(feed)
    app.command("fetch-history")(fetch_history_command)
    app.add_typer(topic_app)
    app.add_typer(portfolio_app)
    app.add_typer(kafka_app)
    app.add_typer(job_app)
    app.add_typer(flink_app)
    register_store(app)
    app.command("rebalancer")(rebalancer_command)
    app.command("dashboard")(dashboard_command)
    plain_flags(app)


_register()


if __name__ == "__main__":  # pragma: no cover
    app()
