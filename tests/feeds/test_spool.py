"""A feed stopped during a broker outage: prompt, nothing lost, sent first by the next run.

:class:`OutageProducer` stands in for the Kafka producer with its broker away: like librdkafka
with ``message.timeout.ms=0`` it keeps everything it is given until the broker is back, and
gives it up on ``purge``. The stop requests are real signals sent to this process.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from streamfolio.config import KafkaSettings, Settings, load_config, settings_from_mapping
from streamfolio.errors import StreamfolioError
from streamfolio.feeds.options import FeedOptions
from streamfolio.feeds.run import feed_spool_path, run_feed
from streamfolio.feeds.spool import STOP_FLUSH_S, Spool, StopSignals
from streamfolio.kafka.clients import RecordProducer
from streamfolio.kafka.unsent import UnsentFile, UnsentFileError, UnsentMessage
from streamfolio.serde import codec_for, is_heartbeat

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
START = "2026-10-01T09:30:00Z"


@dataclass
class OutageProducer:
    """A producer whose broker is away while ``up`` is False."""

    partitions: int = 3
    up: bool = False
    refuse: bool = False
    queue: list[UnsentMessage] = field(default_factory=list)
    produced: list[UnsentMessage] = field(default_factory=list)
    delivered: list[UnsentMessage] = field(default_factory=list)
    failed: int = 0
    stopping: bool = False
    metadata_wait_s: float = 0.0
    acks_per_flush: int = 0  # > 0: a slow broker, acknowledging that many messages a flush
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        if partition is None and key is not None:
            partition = zlib.crc32(key) % self.partitions
        message = UnsentMessage(topic, partition, key, value, timestamp_ms)
        with self.lock:
            self.produced.append(message)
            self.queue.append(message)

    def send(self, contract: Any, record: dict[str, Any], **_: Any) -> None:
        value = codec_for(contract.schema).encode(record)
        self.send_raw(contract.name, contract.key_of(record), value)

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        time.sleep(self.metadata_wait_s)  # librdkafka waits for the broker, deaf to signals
        return self.partitions

    def poll(self, timeout: float = 0.0) -> None:
        pass

    def flush(self, timeout: float = 30.0) -> int:
        with self.lock:
            if self.up:
                if self.refuse:
                    self.failed += len(self.queue)
                else:
                    self.delivered.extend(self.queue)
                self.queue.clear()
                return 0
            self.delivered.extend(self.queue[: self.acks_per_flush])
            del self.queue[: self.acks_per_flush]
            waiting = len(self.queue)
        time.sleep(timeout)
        return waiting

    def stop_waiting(self) -> None:
        self.stopping = True

    def purge(self) -> list[UnsentMessage]:
        with self.lock:
            purged, self.queue = self.queue, []
        return purged


def signal_after(seconds: float, *signals: signal.Signals) -> threading.Timer:
    """Send ``signals`` to this process after ``seconds``, 0.3 s apart."""

    def send() -> None:
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.3)
            os.kill(os.getpid(), sig)

    timer = threading.Timer(seconds, send)
    timer.start()
    return timer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data = load_config(EXAMPLES / "cse.yaml", environ={}).model_dump(mode="json", by_alias=True)
    data["feed"] = {**data["feed"], "spool_dir": str(tmp_path / "spool"), "heartbeat_ms": 20}
    return settings_from_mapping(data)


@pytest.fixture(autouse=True)
def handlers_restored() -> Iterator[None]:
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = [signal.getsignal(s) for s in signals]
    yield
    assert [signal.getsignal(s) for s in signals] == before


def feed(settings: Settings, producer: OutageProducer, lines: list[str], **options: Any) -> Any:
    options = {"source": "sim", "rate": 200.0, "start": START, **options}
    return run_feed(
        settings, FeedOptions(**options), progress=lines.append, producer=cast(Any, producer)
    )


def ticks_of(messages: list[UnsentMessage]) -> list[UnsentMessage]:
    return [m for m in messages if m.topic.startswith("intraday") and not is_heartbeat(m.value)]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_during_an_outage_is_prompt_and_keeps_everything_in_order(
    settings: Settings, stop: signal.Signals
) -> None:
    producer = OutageProducer()
    lines: list[str] = []
    timer = signal_after(0.5, stop)
    started = time.monotonic()
    stats = feed(settings, producer, lines)
    elapsed = time.monotonic() - started
    timer.join()
    assert elapsed < 0.5 + STOP_FLUSH_S + 1.0, lines
    kept = UnsentFile(feed_spool_path(settings)).read()
    assert kept == producer.produced, "everything accepted, in the order it was produced"
    assert stats.spooled == len(kept) and stats.published == len(ticks_of(kept)) > 0
    assert any(is_heartbeat(m.value) for m in kept), "heartbeats are kept like ticks"
    assert producer.stopping, "a full queue is not waited for once stopping"
    assert any(line.startswith("stopping: waiting 2 s at most") for line in lines), lines
    assert (
        f"kept {len(kept)} message(s)" in lines[-1] and str(feed_spool_path(settings)) in lines[-1]
    )
    assert f", {len(kept)} unacknowledged kept for the next run" in stats.line()


def test_the_next_run_publishes_what_was_kept_first_then_removes_it(settings: Settings) -> None:
    timer = signal_after(0.3, signal.SIGTERM)
    feed(settings, OutageProducer(), [])
    timer.join()
    path = feed_spool_path(settings)
    kept = UnsentFile(path).read()
    assert kept

    producer = OutageProducer(up=True)
    lines: list[str] = []
    stats = feed(settings, producer, lines, max_ticks=10, start="2026-11-01T09:30:00Z")
    assert producer.delivered[: len(kept)] == kept, "first, in their order, as they were"
    assert len(ticks_of(producer.delivered[len(kept) :])) == 10
    assert not path.exists()
    assert f"republished {len(kept)} message(s) kept from the last run" in lines
    assert lines.index(f"republished {len(kept)} message(s) kept from the last run") < next(
        i for i, line in enumerate(lines) if line.startswith("feed sim: publishing")
    )
    assert stats.republished == len(kept) and stats.spooled == 0
    assert f"{len(kept)} kept from the last run republished" in stats.line()


def test_a_stop_while_republishing_leaves_the_file_as_it_was(settings: Settings) -> None:
    timer = signal_after(0.3, signal.SIGTERM)
    feed(settings, OutageProducer(), [])
    timer.join()
    path = feed_spool_path(settings)
    before = path.read_bytes()

    producer = OutageProducer()  # the broker is still away
    lines: list[str] = []
    timer = signal_after(0.5, signal.SIGTERM)
    started = time.monotonic()
    stats = feed(settings, producer, lines)
    timer.join()
    assert time.monotonic() - started < 1.5
    assert path.read_bytes() == before
    assert producer.queue == [], "purged"
    assert len(producer.produced) == len(UnsentFile(path).read()), "nothing new was produced"
    assert stats.published == 0 and stats.spooled == 0
    assert lines[-1].startswith("stopping: the ") and "stay in" in lines[-1]


def test_a_run_that_ends_during_an_outage_waits_for_the_broker_until_asked_to_stop(
    settings: Settings,
) -> None:
    producer = OutageProducer()
    lines: list[str] = []
    timer = signal_after(1.5, signal.SIGTERM)
    started = time.monotonic()
    stats = feed(settings, producer, lines, max_ticks=20, fast=True)
    timer.join()
    assert 1.5 <= time.monotonic() - started < 1.5 + STOP_FLUSH_S + 1.0
    kept = UnsentFile(feed_spool_path(settings)).read()
    assert len(ticks_of(kept)) == stats.published == 20
    assert any(line.startswith("stopping: waiting 2 s at most") for line in lines), lines


def test_a_stop_does_not_wait_for_a_metadata_lookup_of_the_heartbeats(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    producer = OutageProducer(metadata_wait_s=3.0)
    timer = signal_after(0.5, signal.SIGTERM)
    started = time.monotonic()
    stats = feed(settings, producer, [])
    timer.join()
    assert time.monotonic() - started < 0.5 + 1.0 + STOP_FLUSH_S + 1.0
    assert stats.published == 0, "the feed was still waiting for its heartbeats to start"
    assert "no last round of heartbeats" in caplog.text
    time.sleep(3.0)  # the lookup returns: the heartbeat thread ends without a round
    assert producer.produced == []


def test_a_second_signal_stops_waiting_for_the_broker(settings: Settings) -> None:
    producer = OutageProducer()
    timer = signal_after(0.3, signal.SIGINT, signal.SIGTERM)
    started = time.monotonic()
    stats = feed(settings, producer, [])
    timer.join()
    assert time.monotonic() - started < 0.3 + 0.3 + 1.0, "well within the 2 s flush"
    assert stats.spooled == len(UnsentFile(feed_spool_path(settings)).read()) > 0


def test_a_slow_broker_gets_its_two_seconds_and_nothing_is_kept(settings: Settings) -> None:
    producer = OutageProducer(acks_per_flush=25)
    stop = signal_after(0.5, signal.SIGTERM)
    stats = feed(settings, producer, [])
    stop.join()
    assert stats.spooled == 0 and not feed_spool_path(settings).exists()
    assert producer.delivered == producer.produced


def test_a_broker_that_acknowledges_nothing_gets_half_a_second(settings: Settings) -> None:
    producer = OutageProducer()
    stop = signal_after(0.5, signal.SIGTERM)
    started = time.monotonic()
    stats = feed(settings, producer, [])
    stop.join()
    assert time.monotonic() - started < 0.5 + STOP_FLUSH_S - 0.5, "not the whole 2 s"
    assert stats.spooled > 0


def test_the_heartbeats_feed_keeps_its_heartbeats_too(settings: Settings) -> None:
    producer = OutageProducer()
    lines: list[str] = []
    timer = signal_after(0.5, signal.SIGTERM)
    started = time.monotonic()
    stats = feed(settings, producer, lines, source="heartbeats")
    timer.join()
    assert time.monotonic() - started < 0.5 + STOP_FLUSH_S + 1.0
    kept = UnsentFile(feed_spool_path(settings)).read()
    assert kept == producer.produced and all(is_heartbeat(m.value) for m in kept)
    assert stats.spooled == len(kept) > 0 and "kept for the next run" in stats.line()
    assert any(line.startswith("stopping: a last round of heartbeats") for line in lines)


def test_a_corrupt_file_stops_the_feed_before_anything_is_produced(settings: Settings) -> None:
    path = feed_spool_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text("not json\n")
    producer = OutageProducer(up=True)
    with pytest.raises(UnsentFileError, match="line 1: not a streamfolio-unsent header"):
        feed(settings, producer, [], max_ticks=5)
    assert producer.produced == [] and path.read_text() == "not json\n"


def test_kept_messages_the_broker_refuses_stay_in_the_file(settings: Settings) -> None:
    path = feed_spool_path(settings)
    UnsentFile(path).append([UnsentMessage("nowhere", None, b"k", b"v", 1)])
    producer = OutageProducer(up=True, refuse=True)
    with pytest.raises(StreamfolioError, match=r"1 of the 1 message.* the file is kept"):
        feed(settings, producer, [], max_ticks=5)
    assert UnsentFile(path).read() == [UnsentMessage("nowhere", None, b"k", b"v", 1)]


def test_stop_signals_hurry_only_after_calm() -> None:
    with StopSignals() as signals:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here
        assert not signals.hurried
        signals.calm()
        os.kill(os.getpid(), signal.SIGINT)  # counted, not raised
        time.sleep(0.01)
        assert signals.hurried and signals.received == 2


def test_spool_finish_waits_without_limit_when_nobody_asked_to_stop(tmp_path: Path) -> None:
    producer = OutageProducer()
    producer.send_raw("t", b"k", b"v", timestamp_ms=1)
    threading.Timer(0.5, lambda: setattr(producer, "up", True)).start()
    spool = Spool(cast(Any, producer), tmp_path / "spool.jsonl", lambda _: None, stop_flush_s=0.1)
    assert spool.finish(requested=False) == 0
    assert producer.delivered and not spool.path.exists()


# --- the real producer, without a broker -----------------------------------------------------


def unreachable() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers="127.0.0.1:1")  # nothing listens on port 1


def test_record_producer_purge_gives_back_what_it_was_given_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = RecordProducer(unreachable(), component="feed")
    sent = [
        UnsentMessage("t1", None if i % 2 else i % 3, b"k%d" % i, b"v%d" % i, 1000 + i)
        for i in range(40)
    ]
    sent.append(UnsentMessage("t2", None, None, b"no key, no time", None))
    for m in sent:
        producer.send_raw(
            m.topic, m.key, m.value, timestamp_ms=m.timestamp_ms, partition=m.partition
        )
    assert producer.flush(0.2) == len(sent)
    assert producer.purge() == sent
    assert len(producer) == 0 and producer.failed == 0
    assert "delivery failed" not in caplog.text, "purged messages are kept, not failures"
    assert producer.purge() == []


def test_record_producer_keeps_what_does_not_fit_once_stopping() -> None:
    producer = RecordProducer(
        unreachable(), component="feed", **{"queue.buffering.max.messages": 5}
    )
    for i in range(5):
        producer.send_raw("t", b"k", b"%d" % i, timestamp_ms=i)
    blocked = threading.Thread(target=producer.send_raw, args=("t", b"k", b"5"))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a full queue makes the sender wait"
    producer.stop_waiting()
    blocked.join(1.0)
    assert not blocked.is_alive()
    producer.send_raw("t", b"k", b"6", timestamp_ms=6)
    assert [m.value for m in producer.purge()] == [b"%d" % i for i in range(7)]
