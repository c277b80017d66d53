"""``streamfolio rebalancer``: run the rebalancer service until Ctrl-C, SIGTERM or --duration.

The main CLI registers :func:`rebalancer_command` as ``rebalancer``; ``python -m
streamfolio.rebalancer.cli`` runs it on its own. Status lines go to stderr.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import typer

from streamfolio.cli_support import RequiredConfigOption, command_errors, configure_logging, say
from streamfolio.observability.options import LogFormatOption, MetricsPortOption

__all__ = ["main", "rebalancer_command"]


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop``; a second one stops at once (KeyboardInterrupt)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        typer.echo(
            f"{name}: finishing the current transaction and leaving the group "
            "(again to stop at once)",
            err=True,
        )
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def rebalancer_command(
    config: RequiredConfigOption = None,
    group_id: Annotated[
        str | None,
        typer.Option(
            "--group-id", help="Consumer group (default: rebalancer.group_id in the config)."
        ),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option(
            "--instance",
            help="This instance's name in the group (default: the host name). Give each "
            "instance its own, and a restarted one the one it had.",
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds.", min=0)
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning/--only-new",
            help="Where a group with no committed offsets starts: at the oldest records, so "
            "that no metrics written before this rebalancer joined are missed (already "
            "decided ones are skipped), or only at new ones.",
        ),
    ] = True,
    status_interval: Annotated[
        float, typer.Option("--status-interval", help="Seconds between status lines.", min=0.1)
    ] = 30.0,
    metrics_port: MetricsPortOption = None,
    log_format: LogFormatOption = "text",
) -> None:
    """Rebalance portfolios whose Sharpe ratio falls below their threshold (SEMANTICS §7).

    Reads metrics and updated statistics as a consumer group (instances share the portfolios),
    decides with each portfolio's policy in event time, and publishes new weights and rebalance
    events in Kafka transactions, exactly once. Memory (last weights, policy state) is rebuilt
    from the weights and rebalance-events topics on start: no local files. Owners are told
    through the apprise URLs under `notify`. Ctrl-C or SIGTERM finishes the current transaction
    and leaves the group.
    """
    from streamfolio.config import load_config
    from streamfolio.kafka.outage import broker_watch
    from streamfolio.observability.logs import use_log_format
    from streamfolio.observability.metrics import start_metrics
    from streamfolio.rebalancer.service import RebalancerService

    configure_logging(logging.INFO)
    # apprise is chatty at INFO about every delivery; its failures still show.
    logging.getLogger("apprise").setLevel(logging.WARNING)
    with command_errors():
        use_log_format(log_format, logging.INFO)
    broker_watch("rebalancer")
    stop = threading.Event()
    with command_errors(interrupted=130):
        settings = load_config(config)
        start_metrics(settings, "rebalancer", metrics_port)
        service = RebalancerService(
            settings,
            group_id=group_id,
            instance=instance,
            from_beginning=from_beginning,
            progress=say,
            status_interval_s=status_interval,
        )
        with _stop_on_signals(stop):
            service.run(stop, duration_s=duration)


def main() -> None:
    """Run :func:`rebalancer_command` as a program."""
    typer.run(rebalancer_command)


if __name__ == "__main__":  # pragma: no cover
    main()
