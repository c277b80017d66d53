"""Feeds send heartbeats on every partition of the prices topic, and never promise too much.

A fake producer stands in for Kafka: it records every message in production order and places
keyed ticks on partitions by a fixed hash, as a partitioner does. The invariant checked on every
partition: heartbeat times never decrease, and no tick produced after a heartbeat is older than
it (SEMANTICS.md §4).
"""

from __future__ import annotations

import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from streamfolio.config import Settings, load_config, settings_from_mapping
from streamfolio.errors import ConfigError, SchemaError, UsageError
from streamfolio.feeds.heartbeat import Heartbeats, wall_clock_floor
from streamfolio.feeds.heartbeat_feed import HeartbeatFeed, HeartbeatFeedStats
from streamfolio.feeds.publish import TickPublisher
from streamfolio.feeds.run import FeedOptions, ReplayedTicks, SimulatedTicks, run_feed
from streamfolio.feeds.simulate import Calibration, Disorder, TickSimulator
from streamfolio.kafka.clients import DeadLetters, RecordProducer
from streamfolio.kafka.topics import TopicContract, contract
from streamfolio.messages import Heartbeat
from streamfolio.serde import codec_for, decode_heartbeat, encode_heartbeat, is_heartbeat

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class Sent:
    topic: str
    partition: int
    key: bytes | None
    timestamp_ms: int | None
    value: bytes


@dataclass
class FakeProducer:
    """Records what a :class:`RecordProducer` would produce, partitioned as a broker would."""

    partitions: int = 3
    sent: list[Sent] = field(default_factory=list)
    metadata_error: Exception | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    failed: int = 0

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        if partition is None:
            assert key is not None, "an unkeyed message without a partition"
            partition = zlib.crc32(key) % self.partitions
        assert 0 <= partition < self.partitions
        with self.lock:
            self.sent.append(Sent(topic, partition, key, timestamp_ms, value))

    def send(
        self, contract: TopicContract, record: dict[str, Any], *, timestamp_ms: int | None = None
    ) -> None:
        value = codec_for(contract.schema).encode(record)
        key = contract.key_of(record) or b"-"
        self.send_raw(contract.name, key, value, timestamp_ms=timestamp_ms)

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        if self.metadata_error is not None:
            raise self.metadata_error
        return self.partitions

    def flush(self, timeout: float = 30.0) -> int:
        return 0

    def poll(self, timeout: float = 0.0) -> None:
        pass

    def stop_waiting(self) -> None:
        pass

    def purge(self) -> list[Any]:
        return []  # everything was "delivered" at once

    def on(self, topic: str) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if s.topic == topic]


def check_partitions(messages: list[Sent], partitions: int) -> dict[int, list[int]]:
    """Assert the heartbeat contract on each partition; returns its heartbeat times."""
    beats: dict[int, list[int]] = {p: [] for p in range(partitions)}
    promised: dict[int, int] = {}
    for m in messages:
        if is_heartbeat(m.value):
            beat = decode_heartbeat(m.value)
            assert m.key is None and m.timestamp_ms == beat.time
            assert beat.time >= promised.get(m.partition, beat.time), "T went down"
            promised[m.partition] = beat.time
            beats[m.partition].append(beat.time)
        else:
            tick = codec_for("PriceTick").decode(m.value)
            assert m.timestamp_ms == tick["event_time"]
            limit = promised.get(m.partition)
            assert limit is None or tick["event_time"] >= limit, (
                f"tick {tick} after a heartbeat at {limit} on partition {m.partition}"
            )
    assert all(beats.values()), f"a partition got no heartbeat: {beats}"
    return beats


# A feed reads (and removes) the unsent-messages file of its topic in feed.spool_dir when it
# starts: never a developer's own .cache/feed.
SPOOL_DIR = Path(tempfile.mkdtemp(prefix="streamfolio-test-spool-"))


def settings_with(**feed: Any) -> Settings:
    data = load_config(EXAMPLES / "cse.yaml", environ={}).model_dump(mode="json", by_alias=True)
    data["feed"] = {**data["feed"], "spool_dir": str(SPOOL_DIR), **feed}
    return settings_from_mapping(data)


def ticks_of(producer: FakeProducer, settings: Settings) -> list[dict[str, Any]]:
    return [
        codec_for("PriceTick").decode(m.value)
        for m in producer.on(settings.topics.prices)
        if not is_heartbeat(m.value)
    ]


# --- Heartbeats on their own ------------------------------------------------------------------


def test_nothing_is_sent_before_a_time_is_known() -> None:
    producer = FakeProducer()
    beats = Heartbeats(producer, "prices", interval_ms=100)
    assert beats.beat() == 0 and producer.sent == [] and beats.promised is None


def test_a_round_is_one_heartbeat_per_partition_keyless_and_stamped_with_t() -> None:
    producer = FakeProducer(partitions=4)
    beats = Heartbeats(producer, "prices", interval_ms=100, source="sim")
    beats.advance(1_750_000_000_000)
    assert beats.beat() == 4
    assert [m.partition for m in producer.sent] == [0, 1, 2, 3]
    for m in producer.sent:
        assert m.topic == "prices" and m.key is None and m.timestamp_ms == 1_750_000_000_000
        assert decode_heartbeat(m.value) == Heartbeat(1_750_000_000_000, "sim")
    assert beats.promised == 1_750_000_000_000 and beats.sent == 4 and beats.rounds == 1


def test_t_never_decreases() -> None:
    producer = FakeProducer(partitions=1)
    clock = iter([500, 400, None, 900, 800])
    beats = Heartbeats(producer, "p", interval_ms=100, clock_floor=lambda: next(clock))
    beats.advance(450)
    for _ in range(4):
        beats.beat()
    beats.advance(100)  # a lower bound than before says nothing new
    beats.beat()
    assert [decode_heartbeat(m.value).time for m in producer.sent] == [500, 500, 500, 900, 900]


def test_a_time_outside_the_schema_sends_nothing() -> None:
    producer = FakeProducer(partitions=1)
    beats = Heartbeats(producer, "p", interval_ms=100, clock_floor=lambda: -5)
    assert beats.beat() == 0 and producer.sent == []


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_ms must be > 0"):
        Heartbeats(FakeProducer(), "p", interval_ms=0)


def test_the_thread_beats_every_interval_while_the_feed_is_busy() -> None:
    producer = FakeProducer(partitions=2)
    beats = Heartbeats(producer, "p", interval_ms=10)
    beats.advance(1000)
    with beats:
        time.sleep(0.25)  # the feed's thread blocked (a slow poll, the market closed)
        rounds = beats.rounds
    assert rounds >= 8, rounds
    assert beats.rounds == rounds + 1, "stop sends a last round"
    assert len(producer.sent) == 2 * beats.rounds


def test_metadata_failures_are_survived_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    producer = FakeProducer(partitions=2, metadata_error=RuntimeError("broker away"))
    beats = Heartbeats(producer, "p", interval_ms=10)
    beats.advance(1000)
    beats.start()
    time.sleep(0.05)
    assert producer.sent == []
    producer.metadata_error = None
    time.sleep(0.1)
    beats.stop()
    assert {m.partition for m in producer.sent} == {0, 1}
    warnings = [r for r in caplog.records if "cannot read the partitions" in r.getMessage()]
    assert len(warnings) == 1, "logged once, not every round"


def test_stop_without_a_final_round() -> None:
    producer = FakeProducer(partitions=1)
    beats = Heartbeats(producer, "p", interval_ms=10_000)
    beats.start()
    beats.stop(final=False)
    assert producer.sent == []  # no time was ever known


# --- sources and their horizons ---------------------------------------------------------------


CALIBRATION = Calibration(
    ("ATW", "IAM", "BCP"), np.zeros(3), np.eye(3) * 1e-8, np.array([600.0, 100.0, 250.0])
)


@pytest.mark.parametrize(
    "disorder",
    [None, Disorder(out_of_order=0.3, bound_ms=2000), Disorder(0.3, 2000, 0.05, 122_000)],
)
def test_simulated_horizon_bounds_every_later_tick(disorder: Disorder | None) -> None:
    sim = TickSimulator(CALIBRATION, rate=7.0, start_ms=10_000, seed=4, disorder=disorder, block=64)
    ticks = SimulatedTicks(sim)
    stream = iter(ticks)
    horizons, times = [], []
    for _ in range(500):
        horizons.append(ticks.horizon())
        times.append(next(stream)[0])
    assert horizons == sorted(horizons), "the horizon never goes back"
    for i, bound in enumerate(horizons):
        assert min(times[i:]) >= bound
    if disorder is None:
        assert horizons == times, "without disorder the horizon is the next tick's time"


def test_nominal_time_matches_the_blocks() -> None:
    sim = TickSimulator(CALIBRATION, rate=3.7, start_ms=1_750_000_000_123, block=128)
    times = [t for t, _, _ in sim.take(1000)]
    assert times == [sim.nominal_time(i) for i in range(1000)]


def test_replayed_horizon_is_the_least_time_to_come_then_one_past_the_last() -> None:
    rows = [(10, "A", 1.0), (30, "B", 1.0), (20, "A", 1.0), (20, "B", 1.0), (50, "A", 1.0)]
    ticks = ReplayedTicks(rows)
    seen = []
    for row in ticks:
        seen.append((row[0], ticks.horizon()))
    assert seen == [(10, 20), (30, 20), (20, 20), (20, 50), (50, 51)]


# --- whole feeds -----------------------------------------------------------------------------


def run(settings: Settings, options: FeedOptions, producer: FakeProducer) -> Any:
    return run_feed(
        settings, options, progress=lambda _: None, producer=cast(RecordProducer, producer)
    )


def test_sim_feed_heartbeats_every_partition_with_safe_times() -> None:
    settings = settings_with(heartbeat_ms=10)
    producer = FakeProducer(partitions=3)
    options = FeedOptions(
        source="sim", rate=300.0, max_ticks=90, start="2026-10-01T09:30:00Z", out_of_order=0.3
    )
    stats = run(settings, options, producer)
    assert stats.published == 90 and stats.behind_heartbeat == 0
    messages = producer.on(settings.topics.prices)
    beats = check_partitions(messages, 3)
    assert min(len(b) for b in beats.values()) >= 5, "heartbeats all along, not just at the end"
    assert stats.heartbeats == sum(len(b) for b in beats.values())
    assert "heartbeats" in stats.line()
    # Interleaved with the ticks: some heartbeat comes before the last tick.
    first_beat = next(i for i, m in enumerate(messages) if is_heartbeat(m.value))
    assert first_beat < len(messages) - 3


def test_sim_feed_with_late_ticks_promises_nothing_they_break() -> None:
    settings = settings_with(heartbeat_ms=5)
    producer = FakeProducer(partitions=2)
    options = FeedOptions(
        source="sim",
        rate=2000.0,
        fast=True,
        max_ticks=3000,
        start="2026-10-01T09:30:00Z",
        out_of_order=0.2,
        late=0.05,
    )
    stats = run(settings, options, producer)
    assert stats.behind_heartbeat == 0
    check_partitions(producer.on(settings.topics.prices), 2)


def test_replay_heartbeats_follow_the_file_and_end_one_past_the_last_tick(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.csv"
    ticks.write_text(
        "time,ticker,price\n"
        "2026-10-01T10:00:00.000+01:00,ATW,700\n"
        "2026-10-01T10:00:00.100+01:00,IAM,100\n"
        "2026-10-01T09:59:59.950+01:00,BCP,250\n"  # out of order, as tick files may be
        "2026-10-01T10:00:00.150+01:00,NOPE,1\n"  # dead-lettered: promises hold all the same
        "2026-10-01T10:00:00.300+01:00,ATW,701\n"
    )
    settings = settings_with(heartbeat_ms=10)
    producer = FakeProducer(partitions=3)
    stats = run(settings, FeedOptions(source="replay", prices=ticks, speed=1.0), producer)
    assert stats.published == 4 and stats.rejected == {"unknown_ticker": 1}
    assert stats.behind_heartbeat == 0
    beats = check_partitions(producer.on(settings.topics.prices), 3)
    last = 1_790_845_200_300  # 10:00:00.300 at +01:00
    assert all(b[-1] == last + 1 for b in beats.values()), "the last bars can close"
    first = 1_790_845_199_950
    assert all(b[0] >= first for b in beats.values())


def test_heartbeat_ms_zero_is_the_compatibility_mode(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.csv"
    ticks.write_text("time,ticker,price\n2026-10-01T10:00:00+01:00,ATW,700\n")
    settings = settings_with(heartbeat_ms=0)
    producer = FakeProducer()
    progress: list[str] = []
    stats = run_feed(
        settings,
        FeedOptions(source="replay", prices=ticks),
        progress=progress.append,
        producer=cast(RecordProducer, producer),
    )
    assert stats.published == 1 and stats.heartbeats == 0
    assert not any(is_heartbeat(m.value) for m in producer.sent)
    assert any("no heartbeats" in line for line in progress)


def test_cse_feed_heartbeats_from_the_clock_while_the_market_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lag = 60_000
    settings = settings_with(heartbeat_ms=10, heartbeat_lag_ms=lag)
    old_trade = int(time.time() * 1000) - 10 * lag

    def closed_then_one_late_trade(*_: Any, **__: Any) -> Iterator[tuple[int, str, float]]:
        time.sleep(0.15)  # the poller sleeping until the exchange opens
        yield old_trade, "ATW", 700.0  # reported long after it happened
        time.sleep(0.05)

    from streamfolio.feeds import cse_feed

    monkeypatch.setattr(cse_feed, "cse_ticks", closed_then_one_late_trade)
    producer = FakeProducer(partitions=3)
    before = int(time.time() * 1000) - lag
    stats = run(settings, FeedOptions(source="cse"), producer)
    after = int(time.time() * 1000) - lag
    assert stats.published == 1
    assert stats.behind_heartbeat == 1, "published all the same, and counted"
    assert "older than a heartbeat" in stats.line()
    beats: dict[int, list[int]] = {}
    for m in producer.on(settings.topics.prices):
        if is_heartbeat(m.value):
            beats.setdefault(m.partition, []).append(decode_heartbeat(m.value).time)
    assert set(beats) == {0, 1, 2}
    for times in beats.values():
        assert len(times) >= 10, "every interval while nothing trades"
        assert times == sorted(times) and before <= times[0] and times[-1] <= after
        assert all(decode_heartbeat(encode_heartbeat(Heartbeat(t, "cse"))).time == t for t in times)
    assert all(
        decode_heartbeat(m.value).source == "cse"
        for m in producer.on(settings.topics.prices)
        if is_heartbeat(m.value)
    )


def test_wall_clock_floor_is_now_minus_the_lag() -> None:
    floor = wall_clock_floor(60_000)
    before = int(time.time() * 1000)
    value = floor()
    assert before - 60_000 <= value <= int(time.time() * 1000) - 60_000


def test_publisher_without_heartbeats_is_unchanged() -> None:
    settings = settings_with()
    producer = FakeProducer()
    prices = contract(settings, "prices")
    dead = DeadLetters(cast(RecordProducer, producer), contract(settings, "dead_letter"), "feed")
    publisher = TickPublisher(cast(RecordProducer, producer), prices, dead)
    stats = publisher.run([(1000, "ATW", 700.0), (1001, "IAM", 100.0)], horizon=lambda: 5)
    assert stats.published == 2 and stats.heartbeats == 0
    assert not any(is_heartbeat(m.value) for m in producer.sent)


def test_heartbeat_rejects_bad_times_as_schema_errors() -> None:
    with pytest.raises(SchemaError):
        Heartbeat(2**63)


def test_example_config_documents_the_feed_defaults() -> None:
    example = load_config(EXAMPLES / "cse.yaml", environ={})
    assert example.feed == Settings.model_fields["feed"].default
    assert (example.feed.heartbeat_ms, example.feed.heartbeat_lag_ms) == (200, 60_000)
    text = (EXAMPLES / "cse.yaml").read_text()
    assert "heartbeat_ms: 200" in text and "feed --source heartbeats" in text


# --- --source heartbeats: heartbeats only, next to a producer without them --------------------


NOW_S = 1_790_845_200.0  # 2026-10-01T09:00:00Z


def beats_by_partition(producer: FakeProducer, topic: str) -> dict[int, list[Heartbeat]]:
    found: dict[int, list[Heartbeat]] = {}
    for m in producer.on(topic):
        assert is_heartbeat(m.value), "no ticks, only heartbeats"
        beat = decode_heartbeat(m.value)
        assert m.key is None and m.timestamp_ms == beat.time
        found.setdefault(m.partition, []).append(beat)
    return found


def run_in_thread(
    feed: HeartbeatFeed, producer: FakeProducer, progress: Any = None, **kwargs: Any
) -> tuple[threading.Thread, list[HeartbeatFeedStats]]:
    out: list[HeartbeatFeedStats] = []

    def target() -> None:
        out.append(feed.run(producer, progress or (lambda _: None), **kwargs))

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def test_heartbeats_source_beats_every_partition_at_the_clock_minus_the_lag() -> None:
    settings = settings_with(heartbeat_ms=10, heartbeat_lag_ms=60_000)
    producer = FakeProducer(partitions=4)
    feed = HeartbeatFeed(settings, clock=lambda: NOW_S)
    stats = feed.run(producer, lambda _: None, duration_s=0.2)
    beats = beats_by_partition(producer, settings.topics.prices)
    assert set(beats) == {0, 1, 2, 3}
    rounds = {len(b) for b in beats.values()}
    assert rounds == {stats.rounds} and stats.rounds >= 5, "every interval, on every partition"
    expected = Heartbeat(int(NOW_S * 1000) - 60_000, "heartbeats")
    assert all(b == expected for bs in beats.values() for b in bs)
    assert (stats.published, stats.heartbeats, stats.partitions) == (0, 4 * stats.rounds, 4)
    assert stats.promised == expected.time
    assert stats.line().startswith(f"{stats.rounds} heartbeat rounds sent (")
    assert "2026-10-01T08:59:00.000Z (wall clock - 60000 ms)" in stats.line()


def test_heartbeats_source_t_never_decreases_when_the_clock_steps_back() -> None:
    settings = settings_with(heartbeat_ms=5, heartbeat_lag_ms=1_000)
    # One clock reading per round: rising, stepped back (NTP), rising again, then still.
    readings = [NOW_S, NOW_S + 1, NOW_S + 0.5, NOW_S - 30, NOW_S + 1.2, NOW_S + 2]
    clock = iter(readings)
    feed = HeartbeatFeed(settings, clock=lambda: next(clock, readings[-1]))
    producer = FakeProducer(partitions=2)
    feed.run(producer, lambda _: None, duration_s=0.3)
    floors = np.maximum.accumulate([int(r * 1000) - 1_000 for r in readings]).tolist()
    for beats in beats_by_partition(producer, settings.topics.prices).values():
        times = [b.time for b in beats]
        assert len(times) > len(readings)
        assert times == floors + [floors[-1]] * (len(times) - len(floors))


def test_heartbeats_source_stops_on_request_with_a_last_round() -> None:
    settings = settings_with(heartbeat_ms=10)
    producer = FakeProducer(partitions=3)
    ticking = [NOW_S]
    feed = HeartbeatFeed(settings, lag_ms=0, clock=lambda: ticking[0])
    thread, out = run_in_thread(feed, producer)
    time.sleep(0.1)
    assert thread.is_alive(), "runs until asked to stop"
    ticking[0] = NOW_S + 10  # the last round carries the clock at the stop
    feed.stop()
    thread.join(2.0)
    assert not thread.is_alive()
    stats = out[0]
    beats = beats_by_partition(producer, settings.topics.prices)
    assert all(len(b) == stats.rounds for b in beats.values()) and stats.rounds >= 3
    assert all(b[-1].time == int((NOW_S + 10) * 1000) for b in beats.values())
    sent = len(producer.sent)
    time.sleep(0.05)
    assert len(producer.sent) == sent, "nothing after the stop"


def test_heartbeats_source_reports_progress_and_stops_cleanly_on_ctrl_c() -> None:
    settings = settings_with(heartbeat_ms=10)
    producer = FakeProducer(partitions=2)
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if "rounds sent" in line and len(lines) >= 3:
            raise KeyboardInterrupt  # Ctrl-C while the feed waits

    feed = HeartbeatFeed(settings, lag_ms=5_000, clock=lambda: NOW_S, progress_every_s=0.05)
    stats = feed.run(producer, progress)
    assert "feed heartbeats: no ticks" in lines[0] and "T = wall clock - 5000 ms" in lines[0]
    assert "heartbeat rounds sent" in lines[1]
    assert lines[-1].startswith("stopping: a last round of heartbeats")
    beats = beats_by_partition(producer, settings.topics.prices)
    assert all(len(b) == stats.rounds for b in beats.values())


def test_heartbeats_source_through_run_feed_with_the_lag_option() -> None:
    settings = settings_with(heartbeat_ms=10, heartbeat_lag_ms=60_000)
    producer = FakeProducer(partitions=3)
    lines: list[str] = []
    before = int(time.time() * 1000) - 7_000
    stats = run_feed(
        settings,
        FeedOptions(source="heartbeats", duration_s=0.1, lag_ms=7_000),
        progress=lines.append,
        producer=cast(RecordProducer, producer),
    )
    after = int(time.time() * 1000) - 7_000
    assert isinstance(stats, HeartbeatFeedStats) and stats.rounds >= 3
    assert "heartbeat rounds sent" in stats.line()
    assert lines[0].startswith("feed heartbeats:")
    for beats in beats_by_partition(producer, settings.topics.prices).values():
        times = [b.time for b in beats]
        assert times == sorted(times) and before <= times[0] and times[-1] <= after
        assert {b.source for b in beats} == {"heartbeats"}


def test_bad_feed_options_are_usage_errors() -> None:
    settings = settings_with()
    producer = cast(RecordProducer, FakeProducer())
    for options, message in [
        (FeedOptions(source="nope"), "unknown source"),
        (FeedOptions(source="replay"), "needs --prices"),
        (FeedOptions(calibration="nope"), "unknown calibration"),
        (FeedOptions(rate=0.0), "rate must be positive"),
    ]:
        with pytest.raises(UsageError, match=message):
            run_feed(settings, options, progress=lambda _: None, producer=producer)
    with pytest.raises(UsageError, match="--lag-ms: the heartbeat lag must be >= 0 ms"):
        HeartbeatFeed(settings, lag_ms=-1)


def test_heartbeats_source_needs_an_interval_and_takes_no_tick_limit() -> None:
    with pytest.raises(ConfigError, match=r"feed\.heartbeat_ms': --source heartbeats needs it > 0"):
        HeartbeatFeed(settings_with(heartbeat_ms=0))
    producer = cast(RecordProducer, FakeProducer())
    with pytest.raises(UsageError, match="publishes no ticks"):
        run_feed(
            settings_with(),
            FeedOptions(source="heartbeats", max_ticks=10),
            progress=lambda _: None,
            producer=producer,
        )


def test_heartbeats_source_waits_for_a_topic_without_partitions() -> None:
    settings = settings_with(heartbeat_ms=10)
    producer = FakeProducer(partitions=0)
    lines: list[str] = []
    stats = HeartbeatFeed(settings, clock=lambda: NOW_S).run(
        producer, lines.append, duration_s=0.05
    )
    assert stats.rounds == 0 and producer.sent == []
    assert any("no partitions" in line for line in lines)
