"""The components' Prometheus endpoints: what they serve, that they stay apart, and how a taken
port is refused (streamfolio.observability.metrics)."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamfolio.config import settings_from_mapping
from streamfolio.errors import UsageError
from streamfolio.observability import metrics
from streamfolio.observability.metrics import (
    FEED_REJECTS,
    FEED_TICKS,
    STORE_ROWS,
    metrics_port,
    registry,
    serve_metrics,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by sample name (``..._total``, ``..._created``...), as the parser reads them."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


@pytest.fixture
def feed_server() -> Iterator[metrics.MetricsServer]:
    server = serve_metrics("feed", _free_port())
    assert server is not None
    yield server
    server.close()


def test_an_endpoint_serves_its_components_metrics_only(
    feed_server: metrics.MetricsServer,
) -> None:
    before = registry("feed").get_sample_value("streamfolio_feed_ticks_published_total") or 0.0
    FEED_TICKS.inc(3)
    FEED_REJECTS.labels("unknown_ticker").inc()
    STORE_ROWS.labels("metrics").inc()  # another component's: not on the feed's endpoint
    families = _scrape(feed_server.url)
    assert families["streamfolio_feed_ticks_published_total"] == [({}, before + 3)]
    rejects = {s[0]["reason"]: s[1] for s in families["streamfolio_feed_rejects_total"]}
    assert rejects["unknown_ticker"] >= 1
    assert "streamfolio_store_rows_written_total" not in families
    assert "process_cpu_seconds_total" in families  # the process collector


def test_port_zero_is_off() -> None:
    assert serve_metrics("store", 0) is None


def test_a_taken_port_is_a_usage_error_naming_it(feed_server: metrics.MetricsServer) -> None:
    with pytest.raises(UsageError, match=f"{feed_server.port} is taken"):
        serve_metrics("rebalancer", feed_server.port)


def test_the_option_wins_over_the_configuration() -> None:
    settings = settings_from_mapping(
        {"metrics": {"store_port": 9301}, "portfolios": [{"id": "p", "tickers": ["A", "B"]}]}
    )
    assert metrics_port(settings, "store", None) == 9301
    assert metrics_port(settings, "store", 0) == 0
    assert metrics_port(settings, "feed", None) == 0
