"""Feeds, topic tools and bad input against a real broker (issue: Kafka and feeds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.feeds.run import FeedOptions, run_feed
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import RecordConsumer
from streamfolio.kafka.topics import contract
from streamfolio.messages import Heartbeat, price_tick_from_bourse
from streamfolio.serde import decode_heartbeat, is_heartbeat

KafkaBroker = Any  # tests/integration/conftest.py: the session broker fixture

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Sandbox:
    """Settings with topics of its own on the session broker, and a YAML file of them."""

    settings: Settings
    config_path: Path


def _sandbox(broker: KafkaBroker, tmp_path: Path, **flink: Any) -> Sandbox:
    data = yaml.safe_load(broker.config_path.read_text())
    token = uuid.uuid4().hex[:8]
    data["topics"] = {
        role: f"{name.rsplit('-', 1)[0]}-{token}" for role, name in data["topics"].items()
    }
    data.setdefault("flink", {}).update(flink)
    settings = settings_from_mapping(data)
    ensure_topics(broker.bootstrap, topic_specs(settings))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "streamfolio.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Sandbox(settings, path)


@pytest.fixture
def sandbox(kafka_broker: KafkaBroker, tmp_path: Path) -> Sandbox:
    return _sandbox(kafka_broker, tmp_path)


def _read_all(
    settings: Settings,
    role: str,
    expected: int,
    timeout: float = 30.0,
    *,
    heartbeats: list[tuple[int, int, Heartbeat]] | None = None,
    in_order: list[Any] | None = None,
) -> list[Any]:
    """The records of a topic; heartbeats on the prices topic go to ``heartbeats`` as
    (partition, offset, heartbeat) instead, and ``in_order`` gets both as read."""
    c = contract(settings, role)  # type: ignore[arg-type]
    items = []

    def keep(item: Any) -> None:
        if in_order is not None:
            in_order.append(item)
        if role == "prices" and is_heartbeat(item.value):
            if heartbeats is not None:
                heartbeats.append((item.partition, item.offset, decode_heartbeat(item.value)))
        else:
            items.append(item)

    with RecordConsumer(
        settings.kafka,
        [c],
        component="admin",
        group_id=f"t-{uuid.uuid4().hex}",
        from_beginning=True,
        assign_all=True,
    ) as consumer:
        deadline = time.monotonic() + timeout
        while len(items) < expected and time.monotonic() < deadline:
            item = consumer.poll(0.5)
            if item is not None:
                keep(item)
        # A little longer, to catch anything beyond what was expected.
        for item in consumer.records(timeout=1.0):
            keep(item)
    return items


def _cli(
    *args: str, config: Path, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfolio.cli", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_sim_feed_publishes_keyed_ticks_with_event_time_timestamps(sandbox: Sandbox) -> None:
    options = FeedOptions(
        source="sim", rate=1000.0, fast=True, max_ticks=500, start="2026-10-01T09:30:00Z", seed=3
    )
    stats = run_feed(sandbox.settings, options, progress=lambda _: None)
    assert stats.published == 500 and not stats.rejected
    beats: list[tuple[int, int, Heartbeat]] = []
    in_order: list[Any] = []
    items = _read_all(sandbox.settings, "prices", 500, heartbeats=beats, in_order=in_order)
    assert len(items) == 500
    # Heartbeats on every partition (at least the last round), never promising too much: on
    # each partition no tick read after a heartbeat is older than it.
    partitions = sandbox.settings.kafka.partitions
    assert {p for p, _, _ in beats} == set(range(partitions))
    assert stats.heartbeats >= partitions and not stats.behind_heartbeat
    promised: dict[int, int] = {}
    for item in sorted(in_order, key=lambda i: (i.partition, i.offset)):
        if is_heartbeat(item.value):
            beat = decode_heartbeat(item.value)
            assert item.key is None and item.timestamp_ms == beat.time
            assert beat.time >= promised.get(item.partition, 0)
            promised[item.partition] = beat.time
        else:
            assert item.record["event_time"] >= promised.get(item.partition, 0)
    tickers = {t for p in sandbox.settings.portfolios for t in p.tickers}
    partitions_of: dict[str, set[int]] = {}
    for item in items:
        assert item.record is not None
        assert item.key == item.record["ticker"].encode()
        assert item.timestamp_ms == item.record["event_time"]
        assert item.record["ticker"] in tickers and item.record["price"] > 0
        partitions_of.setdefault(item.record["ticker"], set()).add(item.partition)
    assert all(len(p) == 1 for p in partitions_of.values()), "one ticker, one partition"
    assert len({p for ps in partitions_of.values() for p in ps}) > 1, "keys spread over partitions"


def test_sim_feed_is_deterministic_for_a_seed(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        box = _sandbox(kafka_broker, tmp_path / str(i))
        options = FeedOptions(
            source="sim", rate=50.0, fast=True, max_ticks=200, start="2026-10-01T09:30:00Z", seed=11
        )
        run_feed(box.settings, options, progress=lambda _: None)
        items = _read_all(box.settings, "prices", 200)
        runs.append(
            sorted((i.record["event_time"], i.record["ticker"], i.record["price"]) for i in items)
        )
    assert runs[0] == runs[1]


def test_replay_feed_and_bad_ticks_go_to_dead_letters(sandbox: Sandbox, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.csv"
    ticks.write_text(
        "time,ticker,price\n"
        "2026-10-01T10:00:00+01:00,ATW,700.5\n"
        "2026-10-01T10:00:01+01:00,NOPE,10\n"  # unknown ticker
        "2026-10-01T10:00:02+01:00,IAM,100.2\n"
        "2026-10-01T09:59:59+01:00,BCP,250\n"  # out of order: fine for a tick file
    )
    stats = run_feed(
        sandbox.settings, FeedOptions(source="replay", prices=ticks), progress=lambda _: None
    )
    assert stats.published == 3
    assert stats.rejected == {"unknown_ticker": 1}
    prices = _read_all(sandbox.settings, "prices", 3)
    assert sorted(i.record["ticker"] for i in prices) == ["ATW", "BCP", "IAM"]
    atw = next(i.record for i in prices if i.record["ticker"] == "ATW")
    assert atw["event_time"] == 1_790_845_200_000  # 09:00 UTC: local time +01:00
    dead = _read_all(sandbox.settings, "dead_letter", 1)
    assert [d.record["reason"] for d in dead] == ["unknown_ticker"]
    assert b"NOPE" in dead[0].record["payload"]
    assert dead[0].record["component"] == "feed"


def test_bourse_format_is_readable_as_the_reference_schema(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    box = _sandbox(kafka_broker, tmp_path, price_format="bourse")
    options = FeedOptions(
        source="sim", rate=100.0, fast=True, max_ticks=50, start="2026-10-01T09:30:00Z"
    )
    run_feed(box.settings, options, progress=lambda _: None)
    items = _read_all(box.settings, "prices", 50)
    assert len(items) == 50
    for item in items:
        assert item.record is not None and set(item.record) >= {
            "ticker",
            "field_cours_courant",
            "field_last_traded_time",
        }
        tick = price_tick_from_bourse(item.record)
        assert tick.event_time == item.timestamp_ms
        assert tick.ticker == item.key.decode()


def test_topic_produce_then_tail_round_trips_json(sandbox: Sandbox) -> None:
    lines = [
        {
            "timestamp": 1,
            "portfolio_id": "portf1",
            "weights": {"ATW": 0.5, "IAM": 0.5},
            "reason": "",
            "source": "test",
        },
        {
            "timestamp": 2,
            "portfolio_id": "banks",
            "weights": {"ATW": 1.0},
            "reason": "",
            "source": "test",
        },
    ]
    produced = _cli(
        "topic",
        "produce",
        "weights",
        "--json",
        config=sandbox.config_path,
        stdin="\n".join(json.dumps(x) for x in lines) + "\n",
    )
    assert produced.returncode == 0, produced.stderr
    tailed = _cli(
        "topic",
        "tail",
        sandbox.settings.topics.weights,
        "--from-beginning",
        "--max",
        "2",
        "--timeout",
        "20",
        "--json",
        config=sandbox.config_path,
    )
    assert tailed.returncode == 0, tailed.stderr
    got = sorted((json.loads(x) for x in tailed.stdout.splitlines()), key=lambda r: r["timestamp"])
    assert [g["portfolio_id"] for g in got] == ["portf1", "banks"]
    assert [g["_key"] for g in got] == ["portf1", "banks"]
    assert {"_partition", "_offset"} <= set(got[0])
    assert got[0]["weights"] == {"ATW": 0.5, "IAM": 0.5}


def test_topic_produce_and_tail_heartbeats(sandbox: Sandbox) -> None:
    produced = _cli(
        "topic",
        "produce",
        "prices",
        "--json",
        config=sandbox.config_path,
        stdin='{"heartbeat": {"time": 1750000000000, "source": "manual"}}\n'
        '{"heartbeat": {"time": 1750000000001}, "partition": 1}\n',
    )
    assert produced.returncode == 0, produced.stderr
    partitions = sandbox.settings.kafka.partitions
    tailed = _cli(
        "topic",
        "tail",
        "prices",
        "--from-beginning",
        "--max",
        str(partitions + 1),
        "--timeout",
        "20",
        config=sandbox.config_path,
    )
    assert tailed.returncode == 0, tailed.stderr
    got = [json.loads(x) for x in tailed.stdout.splitlines()]
    assert all("_error" not in g and g["_key"] is None for g in got)
    assert sorted((g["_partition"], g["heartbeat"]["time"]) for g in got) == sorted(
        [(p, 1750000000000) for p in range(partitions)] + [(1, 1750000000001)]
    )
    assert {g["heartbeat"]["source"] for g in got} == {"manual", "unknown"}
    assert all(g["_timestamp"] == g["heartbeat"]["time"] for g in got)


def test_topic_produce_rejects_a_line_that_does_not_fit_the_schema(sandbox: Sandbox) -> None:
    result = _cli(
        "topic",
        "produce",
        "prices",
        "--json",
        config=sandbox.config_path,
        stdin='{"ticker": "ATW", "price": "not a number", "event_time": 1}\n',
    )
    assert result.returncode == 1  # bad data, not a bad option (errors.py)
    assert "stdin line 1" in result.stderr and "price" in result.stderr


def test_init_publish_sends_statistics_and_weights(sandbox: Sandbox) -> None:
    result = _cli("init", "--publish", config=sandbox.config_path, timeout=180)
    assert result.returncode == 0, result.stderr
    ids = {p.id for p in sandbox.settings.portfolios}
    stats = _read_all(sandbox.settings, "initial_stats", len(ids))
    weights = _read_all(sandbox.settings, "weights", len(ids))
    assert {s.key.decode() for s in stats} == ids
    assert {w.record["portfolio_id"] for w in weights} == ids
    assert all(s.record["count"] > 100 for s in stats)


def test_feed_waits_for_a_restarted_broker_and_loses_nothing(
    local_kafka_factory: Callable[[], KafkaBroker], tmp_path: Path
) -> None:
    broker = local_kafka_factory()
    broker.local.up(topic_specs(broker.settings), timeout=120)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    feed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamfolio.cli",
            "feed",
            "--source",
            "sim",
            "--rate",
            "200",
            "--max-ticks",
            "2000",
            "--start",
            "2026-10-01T09:30:00Z",
            "--config",
            str(broker.config_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        time.sleep(3)
        assert broker.local.down(timeout=60)
        time.sleep(3)  # the feed keeps accepting ticks while the broker is away
        broker.local.up(topic_specs(broker.settings), timeout=120)
        output, _ = feed.communicate(timeout=180)
    finally:
        if feed.poll() is None:
            feed.send_signal(signal.SIGINT)
            feed.wait(30)
    assert feed.returncode == 0, output
    assert "2000 ticks published" in output
    items = _read_all(broker.settings, "prices", 2000, timeout=60)
    keys = {(i.record["event_time"], i.record["ticker"], i.record["price"]) for i in items}
    assert len(keys) == 2000, "every accepted tick arrives"
    # A batch the broker wrote just before it stopped, whose ack was lost, may be sent again
    # when the producer's idempotence session does not survive the restart: at least once.
    # A repeated tick is harmless downstream (same event time, same price: the same close).
    assert len(items) <= 2000 + 100, "repeats, if any, are a lost batch, not a replay"


def test_cse_feed_publishes_the_live_board_from_recorded_responses(sandbox: Sandbox) -> None:
    """The CSE feed end to end into Kafka, with the exchange answered by a recorded page."""
    from streamfolio.feeds import cse
    from streamfolio.feeds.cse import CseClient, HttpRequest, HttpResponse
    from streamfolio.feeds.cse_feed import cse_ticks
    from streamfolio.feeds.publish import TickPublisher
    from streamfolio.kafka.clients import DeadLetters, RecordProducer

    page = (
        Path(__file__).resolve().parents[1]
        / "fixtures"
        / "cse"
        / "live-market-actions_2026-10-09_excerpt.html"
    ).read_bytes()

    def transport(request: HttpRequest) -> HttpResponse:
        assert request.url.startswith(cse.BASE_URL + cse.GEN2_LIVE_PATH)
        return HttpResponse(200, page, {"Content-Type": "text/html"})

    settings = sandbox.settings
    producer = RecordProducer(settings.kafka, component="admin")
    publisher = TickPublisher(
        producer,
        contract(settings, "prices"),
        DeadLetters(producer, contract(settings, "dead_letter"), "feed"),
        known_tickers={t for p in settings.portfolios for t in p.tickers},
        source="cse",
    )
    client = CseClient(transport, sleep=lambda _: None)
    options = FeedOptions(source="cse", interval_s=0.05, all_hours=True)
    ticks = cse_ticks(settings, options, publisher, lambda _: None, client=client, max_polls=2)
    stats = publisher.run(ticks)
    assert producer.flush(30) == 0
    assert stats.published > 0, "the recorded board has quotes of configured tickers"
    items = _read_all(settings, "prices", stats.published)
    assert len(items) == stats.published, "an unchanged second poll publishes nothing new"
    assert all(i.record["source"] == "cse" and i.record["price"] > 0 for i in items)


def test_heartbeats_feed_beats_every_prices_partition_until_ctrl_c(sandbox: Sandbox) -> None:
    """`feed --source heartbeats` next to a producer without heartbeats: heartbeats only, on
    every partition, T = the wall clock minus --lag-ms, never decreasing; Ctrl-C stops it after
    a last round and it says how many rounds it sent."""
    lag = 30_000
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    before = int(time.time() * 1000) - lag
    feed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamfolio.cli",
            "feed",
            "--source",
            "heartbeats",
            "--lag-ms",
            str(lag),
            "--config",
            str(sandbox.config_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert feed.stdout is not None
        started: list[str] = []
        while not started or "feed heartbeats: no ticks" not in started[-1]:
            line = feed.stdout.readline()
            assert line, f"the feed ended before it started: {started}"
            started.append(line)
        time.sleep(2.0)
        feed.send_signal(signal.SIGINT)
        rest, _ = feed.communicate(timeout=60)
    finally:
        if feed.poll() is None:
            feed.kill()
            feed.wait(30)
    after = int(time.time() * 1000) - lag
    output = "".join(started) + rest
    assert feed.returncode == 0, output
    assert "stopping: a last round of heartbeats" in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("feed stopped: ") and "heartbeat rounds sent" in last, output
    rounds = int(last.removeprefix("feed stopped: ").split()[0])
    partitions = sandbox.settings.kafka.partitions
    assert rounds >= 5, output  # every feed.heartbeat_ms (200) for 2 s, and a last round

    c = contract(sandbox.settings, "prices")
    beats: dict[int, list[tuple[int, Heartbeat, int | None]]] = {}
    with RecordConsumer(
        sandbox.settings.kafka,
        [c],
        component="admin",
        group_id=f"t-{uuid.uuid4().hex}",
        from_beginning=True,
        assign_all=True,
    ) as consumer:
        deadline = time.monotonic() + 30
        while sum(map(len, beats.values())) < rounds * partitions and time.monotonic() < deadline:
            item = consumer.poll(0.5)
            if item is None:
                continue
            assert is_heartbeat(item.value), "no ticks, only heartbeats"
            assert item.key is None
            beat = decode_heartbeat(item.value)
            beats.setdefault(item.partition, []).append((item.offset, beat, item.timestamp_ms))
    assert set(beats) == set(range(partitions)), "a heartbeat on every partition"
    for found in beats.values():
        assert len(found) == rounds
        times = [beat.time for _, beat, _ in sorted(found, key=lambda f: f[0])]
        assert times == sorted(times), "T never decreases"
        assert before <= times[0] and times[-1] <= after, "T = the wall clock minus the lag"
        assert all(beat.source == "heartbeats" and ts == beat.time for _, beat, ts in found)
