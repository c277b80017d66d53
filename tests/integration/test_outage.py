"""The broker dies under the running loop (issue 13): nothing is lost, nothing differs, no flood.

The loop runs as in production: the job, the rebalancer, the store and the dashboard as
processes; the feed publishes simulated daily bars through the feed's own publisher. Half-way the
broker is killed with SIGKILL for longer than every client timeout, while the feed goes on
publishing (its producer keeps every tick), then started again on the same data. Afterwards:

* the prices topic holds every tick the feed published, once;
* the statistics, metrics and rebalance decisions equal the closed-loop replay of those ticks
  (the replay applies each rebalance's weights in their place among the bars, as the loop does);
* every component logged the outage when it started and when it ended, and did not flood.

The feed is gated on the rebalancer's weights (tests/integration/loopkit.py) and the broker is
killed after the last decision.

A second test sends SIGTERM to every component during an outage: each is gone within 5 s.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import KafkaBroker, private_broker  # tests/integration/conftest.py
from jobkit import free_port, loop_config
from loopkit import (
    DAY_MS,
    DAYS,
    ENV,
    TIMEOUT_S,
    GatedFeed,
    Process,
    Topics,
    assert_loop_equals_replay,
    closed_loop,
    initial_controls,
    prices_on_topic,
    simulated_ticks,
    start_ms,
    wait_for,
    wait_until_done,
)

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.returns import bar_index
from streamfolio.kafka.outage import broker_watch

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("flink_jars")]
JOB_DELIVERY_TIMEOUT_MS = 60_000
"""The job's Kafka producers give records up after ``delivery.timeout.ms`` (Kafka's default,
120 s, in production; the job then restarts from its checkpoint). The test gives them 60 s
(``kafka.java``), the longest client timeout left, so that the outage outlasts them all in half
the time; what expires, and what follows, is the same."""
OUTAGE_S = 70.0
"""Longer than every client timeout: the job's producers' delivery timeout (60 s here, above),
their ``max.block.ms`` (60 s), the store's and the rebalancer's consumer sessions (10 s, below
for the store's), requests and the rebalancer's transactions (30 s)."""
STORE_SESSION_TIMEOUT_MS = 10_000
"""The store's consumer group session (librdkafka's default, 45 s, in production), as short as
the rebalancer's for the test (``kafka.librdkafka`` in the store's configuration alone): it still
expires during the outage, and the broker, started again, waits that long for the store's old
member before the store reads on, 35 s sooner."""
FLOOD_LINES = 40
"""Lines a component may add to its log during the outage (status lines included): the
outage's own lines and a few others, where librdkafka alone used to write twenty a second."""
JOB_RESTART_LINES = 120
"""...and the job's restart after its sinks gave up: the Python worker that Flink cancels prints
its traceback ("Channel closed prematurely", about 50 lines) once per restart."""


# ------------------------------------------------------------------------------------ set-up


def _settings(broker: Any, tmp: Path) -> tuple[Settings, Path]:
    # A cool-down longer than the run: every decision is taken before the outage.
    _, config = loop_config(broker, tmp, "outage", cooldown_s=2 * DAYS * 86_400)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    java = data["kafka"].setdefault("java", {}) or {}
    data["kafka"]["java"] = {**java, "delivery.timeout.ms": str(JOB_DELIVERY_TIMEOUT_MS)}
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return settings_from_mapping(data), config


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One private broker for the module's tests (a broker start fewer): each test kills it,
    and starts it first (``up`` starts it if it does not run); topics are each test's own."""
    made = private_broker(tmp_path_factory.mktemp("outage-broker"))
    try:
        yield made
    finally:
        made.local.down()


def _store_config(config: Path) -> Path:
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    librdkafka = data["kafka"].get("librdkafka") or {}
    data["kafka"]["librdkafka"] = {
        **librdkafka,
        "session.timeout.ms": str(STORE_SESSION_TIMEOUT_MS),
    }
    path = config.with_name(f"store-{config.name}")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _components(config: Path, tmp: Path, *, feed: bool = False) -> list[Process]:
    env = {**ENV, "FLINK_LOG_DIR": str(tmp / "job-flink")}
    store_config = _store_config(config)
    started = [
        Process(
            "job",
            ["job", "run", "--config", str(config), "--starting-offsets", "earliest"],
            tmp,
            env,
        ),
        Process("rebalancer", ["rebalancer", "--config", str(config)], tmp, ENV),
        Process(
            "store",
            [
                "store",
                "--config",
                str(store_config),
                "--database",
                f"sqlite:///{tmp / 'store.db'}",
            ],
            tmp,
            ENV,
        ),
        Process(
            "dashboard",
            ["dashboard", "--config", str(config), "--port", str(free_port())],
            tmp,
            ENV,
        ),
    ]
    if feed:
        start = dt.datetime.fromtimestamp(start_ms() / 1000, tz=dt.UTC).isoformat()
        argv = ["feed", "--source", "sim", "--config", str(config), "--rate", "200"]
        argv += ["--speedup", "864000", "--start", start]
        started.append(Process("feed", argv, tmp, ENV))
    return started


# ------------------------------------------------------------------------------------ the tests


def _outage_lines(component: Process) -> tuple[list[str], list[str]]:
    lines = component.lines()
    started = [line for line in lines if "Kafka unreachable" in line]
    ended = [line for line in lines if "Kafka reachable again" in line]
    return started, ended


def test_the_loop_outlives_a_killed_broker_and_ends_as_the_replay_says(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    broker.local.up(timeout=120)
    settings, config = _settings(broker, tmp_path)
    first_ms = start_ms()
    ticks = simulated_ticks(settings, first_ms)
    controls = initial_controls(settings, first_ms)
    expected = closed_loop(settings, ticks, controls)
    rebalances = [e["timestamp"] for e in expected.get("rebalance", [])]
    assert rebalances, "the scenario must rebalance (seed, crash)"
    kill_after_day = bar_index(max(rebalances), DAY_MS) - bar_index(first_ms, DAY_MS) + 5
    assert kill_after_day < DAYS - 20, "the outage must come after the last decision"

    components = _components(config, tmp_path)
    topics = Topics(settings)
    feed = GatedFeed(settings, ticks)
    stop = threading.Event()

    def weights_seen(timestamp: int) -> bool:
        return any(
            w["timestamp"] == timestamp and w["source"] == "rebalancer"
            for w in topics.records("weights")
        )

    def check() -> None:
        topics.poll()
        for c in components:
            assert c.alive(), f"{c.name} exited: {c.lines()[-30:]}"
        if feed.error is not None:
            raise feed.error

    feeder = threading.Thread(
        target=feed.run, args=(set(rebalances), weights_seen, stop), daemon=True
    )
    try:
        # No head start for the job: it reads from the earliest offsets, and the feed waits at
        # each decision for the rebalancer's weights, which only a running job leads to.
        feeder.start()
        wait_for(lambda: feed.published_days >= kill_after_day, "the decisions", TIMEOUT_S, check)
        before = {c.name: len(c.lines()) for c in components}
        os.kill(broker.local.pid(), signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < OUTAGE_S:
            for c in components:
                assert c.alive(), f"{c.name} exited during the outage: {c.lines()[-30:]}"
            time.sleep(1)
        during = {c.name: len(c.lines()) - before[c.name] for c in components}
        broker.local.up(timeout=120)
        feeder.join(TIMEOUT_S)
        assert not feeder.is_alive() and feed.error is None, feed.error
        assert feed.producer.flush(60) == 0

        wait_until_done(topics, expected, tmp_path / "store.db", check)
    finally:
        stop.set()
        for c in reversed(components):
            c.stop()
        topics.close()

    assert_loop_equals_replay(topics, expected, ticks, prices_on_topic(settings))
    # Every component said when the outage started and when it ended, and did not flood.
    for c in components:
        started, ended = _outage_lines(c)
        assert started and ended, f"{c.name}: {c.lines()[-30:]}"
        allowed = FLOOD_LINES + (JOB_RESTART_LINES if c.name == "job" else 0)
        assert during[c.name] <= allowed, f"{c.name} logged {during[c.name]} lines"
    assert broker_watch().outages >= 1  # the feed's producer (this process) saw it too


def test_every_component_stops_within_five_seconds_during_an_outage(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    broker.local.up(timeout=120)
    settings, config = _settings(broker, tmp_path)
    initial_controls(settings, start_ms())
    components = _components(config, tmp_path, feed=True)
    try:
        topics = Topics(settings)

        def check() -> None:
            topics.poll()
            for c in components:
                assert c.alive(), f"{c.name} exited: {c.lines()[-30:]}"

        try:  # the whole loop runs: the job's metrics are out
            wait_for(lambda: bool(topics.records("metrics")), "metrics", TIMEOUT_S, check)
        finally:
            topics.close()
        time.sleep(3)
        os.kill(broker.local.pid(), signal.SIGKILL)
        wait_for(
            lambda: all(_outage_lines(c)[0] for c in components),
            "every component to notice the outage",
            60,
            lambda: None,
        )
        for c in components:
            assert c.alive(), f"{c.name} exited: {c.lines()[-30:]}"
        sent = time.monotonic()
        for c in components:
            os.kill(c.process.pid, signal.SIGTERM)  # the component, not its group
        gone: dict[str, float] = {}
        while time.monotonic() - sent < 15 and len(gone) < len(components):
            for c in components:
                if c.name not in gone and c.group_gone():
                    gone[c.name] = time.monotonic() - sent
            time.sleep(0.05)
        slow = {c.name: gone.get(c.name) for c in components if gone.get(c.name, 99) > 5.0}
        assert not slow, f"still running 5 s after SIGTERM: {slow}; all: {gone}"
    finally:
        for c in components:
            c.stop()
