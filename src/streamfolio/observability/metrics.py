"""Prometheus metrics of the long-running components, and the endpoint that exposes them.

Each component (``feed``, ``rebalancer``, ``store``, ``dashboard``) counts into a
:class:`~prometheus_client.CollectorRegistry` of its own, so that its endpoint shows its
metrics and nothing of the others' (the demo's components are separate processes, but a test
or an embedding application may hold several in one). The metrics are module-level objects:
the code that does the work increments them whether or not anyone scrapes, which costs a lock
and an addition, and keeps the hooks one line each.

:func:`serve_metrics` starts the HTTP endpoint (``/metrics``, the text format of
``prometheus_client``) on a local port; port 0 means off, the default, so that parallel test
processes never fight over one. The port comes from ``metrics.<component>_port`` in the
configuration or the component's ``--metrics-port`` option (see
:func:`~streamfolio.observability.metrics.metrics_port`). The streaming job exports through
Flink's own Prometheus reporter instead (:mod:`streamfolio.flink.runtime`, docs/operations.md).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.process_collector import ProcessCollector

from streamfolio.errors import UsageError

if TYPE_CHECKING:
    from streamfolio.config import Settings

__all__ = [
    "COMPONENTS",
    "MetricsComponent",
    "MetricsServer",
    "metrics_port",
    "registry",
    "serve_metrics",
    "start_metrics",
]

log = logging.getLogger(__name__)

MetricsComponent = Literal["feed", "rebalancer", "store", "dashboard"]
COMPONENTS: Final[tuple[MetricsComponent, ...]] = ("feed", "rebalancer", "store", "dashboard")

_REGISTRIES: Final[dict[str, CollectorRegistry]] = {}
for _name in COMPONENTS:
    _REGISTRIES[_name] = CollectorRegistry()
    # CPU, memory, open files and start time of the process serving the endpoint.
    ProcessCollector(registry=_REGISTRIES[_name])


def registry(component: MetricsComponent) -> CollectorRegistry:
    """The registry ``component`` counts into (what its endpoint serves).

    >>> registry("store") is registry("store"), registry("store") is registry("feed")
    (True, False)
    """
    return _REGISTRIES[component]


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- feed (streamfolio.feeds) -----------------------------------------------------------------

FEED_TICKS = Counter(
    "streamfolio_feed_ticks_published",
    "Ticks produced to the prices topic.",
    registry=_REGISTRIES["feed"],
)
FEED_HEARTBEATS = Counter(
    "streamfolio_feed_heartbeats_published",
    "Heartbeats produced to the prices topic (one per partition per round).",
    registry=_REGISTRIES["feed"],
)
FEED_REJECTS = Counter(
    "streamfolio_feed_rejects",
    "Ticks dead-lettered instead of published, by reason.",
    ["reason"],
    registry=_REGISTRIES["feed"],
)
FEED_POLL_SECONDS = Histogram(
    "streamfolio_feed_exchange_poll_seconds",
    "Time of one poll of the exchange's live board (--source cse), failed polls included.",
    buckets=_LATENCY_BUCKETS,
    registry=_REGISTRIES["feed"],
)
FEED_POLL_ERRORS = Counter(
    "streamfolio_feed_exchange_poll_errors",
    "Failed polls of the exchange's live board, by kind (http, network, tls, layout, ...).",
    ["kind"],
    registry=_REGISTRIES["feed"],
)

# -- rebalancer (streamfolio.rebalancer) ------------------------------------------------------

REBALANCER_RECORDS = Counter(
    "streamfolio_rebalancer_records_read",
    "Records read and committed, by topic kind (metrics, stats).",
    ["kind"],
    registry=_REGISTRIES["rebalancer"],
)
REBALANCER_DECISIONS = Counter(
    "streamfolio_rebalancer_decisions",
    "Committed decisions on portfolio metrics, by outcome (rebalance, hold, rearm, stale, "
    "already_decided).",
    ["outcome"],
    registry=_REGISTRIES["rebalancer"],
)
REBALANCER_DEAD_LETTERS = Counter(
    "streamfolio_rebalancer_dead_letters",
    "Records dead-lettered by the rebalancer (committed), by reason.",
    ["reason"],
    registry=_REGISTRIES["rebalancer"],
)
REBALANCER_DECISION_SECONDS = Histogram(
    "streamfolio_rebalancer_decision_seconds",
    "Time to decide on one metrics record (the optimiser's run included).",
    buckets=_LATENCY_BUCKETS,
    registry=_REGISTRIES["rebalancer"],
)
REBALANCER_TRANSACTIONS = Counter(
    "streamfolio_rebalancer_transactions",
    "Kafka transactions committed.",
    registry=_REGISTRIES["rebalancer"],
)
REBALANCER_ABORTS = Counter(
    "streamfolio_rebalancer_transaction_aborts",
    "Kafka transactions aborted (their records are read again).",
    registry=_REGISTRIES["rebalancer"],
)
REBALANCER_LAG_SECONDS = Gauge(
    "streamfolio_rebalancer_event_time_lag_seconds",
    "Wall clock minus the event time of the last metrics record read (negative when the "
    "feed's event time runs ahead, as a sped-up simulation's does).",
    registry=_REGISTRIES["rebalancer"],
)

# -- store (streamfolio.store) ----------------------------------------------------------------

STORE_READ = Counter(
    "streamfolio_store_messages_read",
    "Messages read from the topics the store keeps.",
    registry=_REGISTRIES["store"],
)
STORE_ROWS = Counter(
    "streamfolio_store_rows_written",
    "Rows written (inserted or upserted), by table.",
    ["table"],
    registry=_REGISTRIES["store"],
)
STORE_DEAD_LETTERS = Counter(
    "streamfolio_store_dead_lettered",
    "Messages the store did not keep and sent to the dead-letter topic, by reason.",
    ["reason"],
    registry=_REGISTRIES["store"],
)

# -- dashboard (streamfolio.dashboard) --------------------------------------------------------

DASHBOARD_CLIENTS = Gauge(
    "streamfolio_dashboard_clients",
    "Event streams (/api/stream) open now: browsers watching.",
    registry=_REGISTRIES["dashboard"],
)
DASHBOARD_CONNECTIONS = Counter(
    "streamfolio_dashboard_stream_connections",
    "Event streams (/api/stream) opened since start.",
    registry=_REGISTRIES["dashboard"],
)


# -- the endpoint -----------------------------------------------------------------------------


@dataclass(slots=True)
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it (a daemon thread otherwise dies
    with the process)."""

    component: MetricsComponent
    host: str
    port: int
    _server: Any
    _thread: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def metrics_port(settings: Settings, component: MetricsComponent, option: int | None) -> int:
    """The port of ``component``'s endpoint: ``--metrics-port`` when given, else
    ``metrics.<component>_port`` from the configuration (0: no endpoint)."""
    if option is not None:
        return option
    port: int = getattr(settings.metrics, f"{component}_port")
    return port


def serve_metrics(
    component: MetricsComponent, port: int, *, host: str = "127.0.0.1"
) -> MetricsServer | None:
    """Expose ``component``'s registry on ``http://host:port/metrics``; None when ``port`` is 0.

    A port already taken is a :class:`~streamfolio.errors.UsageError` naming it, so the
    component stops before it does any work rather than run unobserved.

    >>> serve_metrics("feed", 0) is None
    True
    """
    if port == 0:
        return None
    try:
        server, thread = start_http_server(port, addr=host, registry=registry(component))
    except OSError as error:
        why = "is taken" if error.errno == errno.EADDRINUSE else f"cannot be used ({error})"
        raise UsageError(
            f"metrics port {host}:{port} {why} (fix: choose another --metrics-port or "
            f"metrics.{component}_port, or 0 for none)"
        ) from None
    log.info("%s metrics on http://%s:%d/metrics", component, host, port)
    return MetricsServer(component, host, port, server, thread)


def start_metrics(
    settings: Settings, component: MetricsComponent, option: int | None
) -> MetricsServer | None:
    """Serve ``component``'s metrics where ``--metrics-port`` (``option``) or the configuration
    says (:func:`metrics_port`), on ``metrics.host``; None when that is port 0."""
    return serve_metrics(
        component, metrics_port(settings, component, option), host=settings.metrics.host
    )
