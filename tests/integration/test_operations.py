"""Operating it (issue #16) against the session broker: the feed (simulated), the rebalancer,
the store and the dashboard run as processes, each with --metrics-port, and a Prometheus
scrape of each endpoint (read with prometheus_client's own parser) finds its metrics; the feed
logs JSON lines with --log-format json; and `topic tail --from-beginning --until-end` exits 0
on the prices topic while the feed is still writing to it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_ports
from prometheus_client.parser import text_string_to_metric_families

from streamfolio.config import settings_from_mapping
from streamfolio.kafka.admin import ensure_topics, topic_specs

KafkaBroker = Any  # tests/integration/conftest.py: the session broker fixture

pytestmark = pytest.mark.integration

SCRAPE_TIMEOUT_S = 60.0


def _sandbox(broker: KafkaBroker, tmp_path: Path) -> Path:
    """A configuration with topics of its own on the session broker."""
    data = yaml.safe_load(broker.config_path.read_text())
    token = uuid.uuid4().hex[:8]
    data["topics"] = {
        role: f"{name.rsplit('-', 1)[0]}-{token}" for role, name in data["topics"].items()
    }
    ensure_topics(broker.bootstrap, topic_specs(settings_from_mapping(data)))
    path = tmp_path / "streamfolio.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _samples(url: str) -> dict[str, float]:
    """The endpoint's samples by name and labels, e.g. ``streamfolio_feed_rejects_total{...}``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def _scrape_until(
    url: str, wanted: str, process: subprocess.Popen[bytes], *, above_zero: bool = False
) -> dict[str, float]:
    """Scrape ``url`` until it answers with the sample ``wanted`` (``above_zero``: and more
    than 0 of it); returns every sample of that scrape."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    last: dict[str, float] = {}
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args} exited {process.returncode}"
        try:
            last = _samples(url)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
            continue
        if wanted in last and (last[wanted] > 0 or not above_zero):
            return last
        time.sleep(0.3)
    raise AssertionError(f"{url}: no {wanted} within {SCRAPE_TIMEOUT_S} s; got {sorted(last)}")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_every_component_serves_metrics_and_tail_until_end_exits_on_a_busy_topic(
    kafka_broker: KafkaBroker, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    config = _sandbox(kafka_broker, tmp_path)
    feed_port, rebalancer_port, store_port, dashboard_port = free_ports(4)
    cli = [sys.executable, "-m", "streamfolio.cli"]
    common = ["--config", str(config)]

    def start(*args: str, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [*cli, *args], stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path
        )
        started.append(process)
        return process

    feed_log = (tmp_path / "feed.log").open("wb")
    feed = start(
        "feed", "--source", "sim", "--rate", "50", "--speedup", "60", *common,
        "--metrics-port", str(feed_port), "--log-format", "json", stderr=feed_log,
    )  # fmt: skip
    rebalancer = start("rebalancer", *common, "--metrics-port", str(rebalancer_port))
    store = start(
        "store", *common, "--database", f"sqlite:///{tmp_path / 'history.db'}",
        "--metrics-port", str(store_port),
    )  # fmt: skip
    dashboard = start("dashboard", *common, "--port", "0", "--metrics-port", str(dashboard_port))

    url = "http://127.0.0.1:{}/metrics".format
    ticks = "streamfolio_feed_ticks_published_total"
    fed = _scrape_until(url(feed_port), ticks, feed, above_zero=True)
    assert fed["streamfolio_feed_heartbeats_published_total"] >= 0
    decided = _scrape_until(
        url(rebalancer_port), "streamfolio_rebalancer_decision_seconds_count", rebalancer
    )
    assert "streamfolio_rebalancer_transaction_aborts_total" in decided
    kept = _scrape_until(url(store_port), "streamfolio_store_messages_read_total", store)
    assert "process_cpu_seconds_total" in kept
    watched = _scrape_until(url(dashboard_port), "streamfolio_dashboard_clients", dashboard)
    assert watched["streamfolio_dashboard_clients"] == 0

    # The feed still writes: read everything up to now, and stop there.
    tail = subprocess.run(
        [*cli, "topic", "tail", "prices", *common, "--from-beginning", "--until-end"],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert tail.returncode == 0, tail.stderr.decode()
    lines = [json.loads(line) for line in tail.stdout.decode().splitlines()]
    assert any("ticker" in line for line in lines)
    assert feed.poll() is None, "the feed was still writing"
    counted = subprocess.run(
        [*cli, "topic", "tail", "prices", *common, "--from-beginning", "--until-end",
         "--count", "--partition", "0"],
        capture_output=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert counted.returncode == 0 and int(counted.stdout.decode()) > 0, counted.stderr.decode()

    feed.terminate()
    feed.wait(timeout=20)
    feed_log.close()
    logged = [json.loads(line) for line in (tmp_path / "feed.log").read_text().splitlines()]
    assert logged and all({"time", "level", "logger", "message"} <= line.keys() for line in logged)
    assert any(line["message"].startswith("feed stopped") for line in logged)
