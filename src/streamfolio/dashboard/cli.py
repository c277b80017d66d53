"""``streamfolio dashboard``: serve the live dashboard on a local port.

This module imports only typer and the standard library, so the main CLI can register the
command whether or not the web extra is installed; the command itself says how to install it.
"""

from __future__ import annotations

import socket
from typing import Annotated, Final

import typer

from streamfolio.cli_support import ConfigOption, command_errors, load_settings, say
from streamfolio.observability.options import LogFormatOption, MetricsPortOption

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "dashboard_command", "listen", "url_for"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8050
_INSTALL_HINT: Final = "pip install 'streamfolio[dashboard]' (starlette and uvicorn)"


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` (port 0: any free one); raises ``OSError``.

    Binding before the server starts means the URL printed is already reachable, and with port 0
    it is the real port.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def url_for(sock: socket.socket) -> str:
    """The ``http://`` URL of a listening socket.

    >>> with listen("127.0.0.1", 0) as s:
    ...     url_for(s).startswith("http://127.0.0.1:")
    True
    """
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def dashboard_command(
    config: ConfigOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 exposes it to the network.")
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")
    ] = DEFAULT_PORT,
    from_beginning: Annotated[
        bool,
        typer.Option(
            help="Load metrics, statistics and dead letters from the oldest message, not only "
            "the last --lookback minutes (weights and rebalance events are always read in full)."
        ),
    ] = False,
    lookback: Annotated[
        float, typer.Option(min=0, help="Minutes of metrics history to load at start.")
    ] = 60.0,
    history: Annotated[
        int, typer.Option(min=10, help="Metrics points kept (and charted) per portfolio.")
    ] = 2000,
    window_days: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Show records stamped at most this many days before now (or before the "
            "newest shown); older ones are ignored and counted as stale. A sanity bound "
            "(1970 stamps), not a retention policy: --history bounds what is kept.",
        ),
    ] = 3650.0,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            envvar="STREAMFOLIO_DASHBOARD_ALLOWED_HOSTS",
            help="Also answer requests for this host name or address (any port); repeatable, "
            "'*' for any. Always allowed: localhost, 127.0.0.1, [::1] and --host. Also "
            "$STREAMFOLIO_DASHBOARD_ALLOWED_HOSTS (separated by spaces).",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds.")
    ] = None,
    metrics_port: MetricsPortOption = None,
    log_format: LogFormatOption = "text",
) -> None:
    """Serve a live web dashboard of the pipeline's topics (Ctrl-C to stop).

    Per portfolio: Sharpe ratio against its threshold band, expected return and risk, weights,
    the correlation matrix of the latest statistics, rebalance decisions, and pipeline health.
    It reads the topics with one consumer outside any consumer group and commits nothing.
    Only the configured portfolios are shown, and only requests for an allowed host name are
    answered (docs/dashboard.md).
    """
    try:
        from streamfolio.dashboard.app import allowed_hosts, create_app, serve
        from streamfolio.dashboard.consumer import ConsumerOptions, DashboardConsumer
        from streamfolio.dashboard.state import DashboardState, Limits
    except ImportError as exc:
        typer.secho(f"error: the dashboard needs {_INSTALL_HINT}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    import threading

    from streamfolio.kafka.outage import broker_watch
    from streamfolio.observability.logs import use_log_format
    from streamfolio.observability.metrics import start_metrics

    with command_errors():
        use_log_format(log_format)
    broker_watch("dashboard")
    with command_errors():
        settings = load_settings(config)
        start_metrics(settings, "dashboard", metrics_port)
        options = ConsumerOptions(from_beginning=from_beginning, lookback_minutes=lookback)
        limits = Limits(metrics=history)
        hosts = allowed_hosts(host, allowed_host or ())
    try:
        sock = listen(host, port)
    except OSError as exc:
        typer.secho(f"error: cannot listen on {host}:{port}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    state = DashboardState.from_settings(
        settings, limits=limits, history_ms=int(window_days * 86_400_000)
    )
    consumer = DashboardConsumer(settings, state, options)
    closing = threading.Event()
    app = create_app(state, consumer=consumer, closing=closing, hosts=hosts)
    typer.echo(f"streamfolio dashboard: {url_for(sock)}  (Ctrl-C to stop)", err=False)
    try:
        with command_errors():
            serve(app, sock, closing=closing, duration_s=duration)
    finally:
        consumer.stop()  # also after a forced exit, which skips the app's shutdown
        sock.close()
    say("dashboard stopped")


def main() -> None:  # pragma: no cover - `python -m streamfolio.dashboard.cli`, before registration
    typer.run(dashboard_command)


if __name__ == "__main__":  # pragma: no cover
    main()
