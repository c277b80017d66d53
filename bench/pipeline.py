"""The streaming job end to end: throughput and latency, next to the Kafka-only baseline.

Run: ``python bench/pipeline.py [--ticks 200000] [--latency-seconds 60]``. It starts its own
single-node broker on free ports and, in one run, measures:

1. **Kafka baseline**: producing the same Avro ticks from one process (acks=all), ticks/s.
2. **Throughput**: the ticks (stamped in the last minutes, so none is ahead of the wall clock)
   are produced first, then a heartbeat past the last one on every partition, then the job runs
   with a bounded source (to the end offsets) over two portfolios of the 11 CSE tickers on 1 s
   bars, once over a fifth of the ticks and once over all of them; ticks/s is the extra ticks
   over the extra wall time, so JVM start-up and shutdown are excluded.
3. **Latency**: the job runs unbounded while the simulator publishes ticks in real time
   (event time = wall time, 1 s bars, bound 200 ms) and, as a live feed does, a heartbeat on
   every partition every 200 ms (the job's watermark moves with the data alone: no idleness);
   for every metrics record, the time from the produce of the first tick stamped past its bar's
   end plus the bound (the earliest a bar can close) to the metrics being readable; p50, p99.
   The window starts once the job is up (its first metrics read; a JVM on a busy machine can
   take a minute or two) and counts the bars closed from 5 s after that, so neither the
   start-up nor the catching up with the ticks produced meanwhile is measured.

The figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from streamfolio.config import (
    KafkaSettings,
    LocalKafkaSettings,
    example_config_path,
    settings_from_mapping,
)
from streamfolio.feeds.heartbeat import Heartbeats
from streamfolio.feeds.simulate import Calibration, TickSimulator
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import producer_config
from streamfolio.kafka.local import LocalKafka, repo_root
from streamfolio.messages import Heartbeat
from streamfolio.serde import codec_for, encode_heartbeat

TICKERS = ("AKT", "ATW", "BOA", "BCP", "MDP", "MUT", "IAM", "RIS", "TGC", "ADI", "IMO")
HEARTBEAT_MS = 200  # feed.heartbeat_ms's default: what a live feed sends
STARTUP_TIMEOUT_S = 300.0  # for the unbounded job's first metrics (a busy 2-core machine)


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


@contextmanager
def scratch_broker(prefix: str) -> Iterator[tuple[str, Path]]:
    """A broker of the project's own tooling on free ports in a temporary folder.

    Yields ``(bootstrap, folder)``; stops the broker and removes the folder afterwards.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        tmp = Path(tmp_name)
        port, controller = _free_ports(2)
        kafka = KafkaSettings(
            bootstrap_servers=f"localhost:{port}",
            local=LocalKafkaSettings(port=port, controller_port=controller, data_dir=tmp / "kafka"),
        )
        broker = LocalKafka(kafka, repo_root(), progress=lambda line: print(line, flush=True))
        broker.up(timeout=120)
        try:
            yield kafka.bootstrap_servers, tmp
        finally:
            broker.down()


def _config(bootstrap: str, tmp: Path, name: str, bound_ms: int) -> tuple[Any, Path]:
    data = yaml.safe_load(example_config_path().read_text())
    token = uuid.uuid4().hex[:6]
    data["kafka"]["bootstrap_servers"] = bootstrap
    data["topics"] = {role: f"bench-{role}-{token}" for role in data["topics"]}
    data["flink"].update(
        {
            "max_out_of_orderness_ms": bound_ms,
            "checkpoint_interval_ms": 5000,
            "checkpoint_dir": str(tmp / f"ckpt-{token}"),
            "starting_offsets": "earliest",
        }
    )
    data["defaults"]["bar_seconds"] = 1
    data["portfolios"] = [
        {"id": "all", "tickers": list(TICKERS), "weights": {t: 1 / 11 for t in TICKERS}},
        {
            "id": "banks",
            "tickers": ["ATW", "BCP", "BOA"],
            "weights": {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2},
        },
    ]
    settings = settings_from_mapping(data)
    ensure_topics(bootstrap, topic_specs(settings))
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return settings, path


def _seed(settings: Any, at_ms: int | None = None) -> None:
    """The portfolios' initial state from the bundled history; ``at_ms`` restamps it (for a
    simulator that starts before the history's last day, so that the state precedes its ticks)."""
    from streamfolio.state import initial_state, publish_state

    state = initial_state(settings)
    if at_ms is not None:
        for entry in state["portfolios"]:
            entry["stats"]["timestamp"] = entry["weights"]["timestamp"] = at_ms
    publish_state(settings, state)


def _simulator(rate: float, start_ms: int) -> TickSimulator:
    import numpy as np

    n = len(TICKERS)
    calibration = Calibration(TICKERS, np.zeros(n), np.eye(n) * 1e-9, np.full(n, 100.0))
    return TickSimulator(calibration, rate=rate, start_ms=start_ms, seed=3)


class HeartbeatSink:
    """:class:`Heartbeats` through a plain producer, the one the ticks go through (so that a
    heartbeat stays behind the ticks produced before it on its partition)."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if timestamp_ms is not None:
            extra["timestamp"] = timestamp_ms
        if partition is not None:
            extra["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, value, key, **extra)
                return
            except BufferError:  # the feed's thread polls: wait for it to make room
                time.sleep(0.01)

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        found = self.producer.list_topics(topic, timeout=timeout).topics.get(topic)
        return 0 if found is None or found.error is not None else len(found.partitions)


def send_heartbeats(producer: Producer, settings: Any, time_ms: int) -> None:
    """One heartbeat at ``time_ms`` on every partition of the prices topic: no tick older than
    that follows on any of them."""
    sink = HeartbeatSink(producer)
    value = encode_heartbeat(Heartbeat(time_ms, "bench"))
    for partition in range(settings.kafka.partitions):
        sink.send_raw(
            settings.topics.prices, None, value, timestamp_ms=time_ms, partition=partition
        )


def _produce_all(settings: Any, ticks: list[tuple[int, str, float]]) -> float:
    """Produce ``ticks`` (the rate is measured on them alone), then a heartbeat one past the
    last on every partition, as a feed that has finished does."""
    codec = codec_for("PriceTick")
    producer = Producer(producer_config(settings.kafka, "feed"))
    topic = settings.topics.prices
    start = time.perf_counter()
    for ms, ticker, price in ticks:
        value = codec.encode({"ticker": ticker, "price": price, "event_time": ms})
        while True:
            try:
                producer.produce(topic, value, ticker.encode(), timestamp=ms)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    rate = len(ticks) / (time.perf_counter() - start)
    send_heartbeats(producer, settings, max(ms for ms, _, _ in ticks) + 1)
    if producer.flush(60) != 0:
        raise RuntimeError("the heartbeats were not acknowledged")
    return rate


def _job(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streamfolio.flink.job", "--config", str(config), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def _bounded_run(
    bootstrap: str, tmp: Path, count: int, name: str, parallelism: int
) -> tuple[float, float, int]:
    """Produce ``count`` ticks, then run the job over them to the end offsets.

    Returns (produce rate, the job process's wall time, updated-statistics records written).
    """
    settings, path = _config(bootstrap, tmp, name, bound_ms=200)
    _seed(settings)
    # After the initial statistics (stamped with the history's last day), as live ticks are,
    # and ending now: none is stamped ahead of the wall clock (validation.max_future_skew_ms).
    rate = 2_000.0
    start_ms = int(time.time() * 1000) - int(count / rate * 1000) - 1000
    ticks = _simulator(rate=rate, start_ms=start_ms).take(count)
    produced = _produce_all(settings, ticks)
    log = tmp / f"{name}-job.log"
    start = time.monotonic()
    job = _job(path, log, "--bounded", "--parallelism", str(parallelism))
    if job.wait() != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"job failed ({job.returncode}):\n{tail}")
    wall = time.monotonic() - start
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})

    def records(topic: str) -> int:
        offsets = (
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(3)
        )
        return sum(high - low for low, high in offsets)

    written, dead = records(settings.topics.updated_stats), records(settings.topics.dead_letter)
    consumer.close()
    if dead:  # every tick must count: a run that dead-letters some measures something else
        raise RuntimeError(f"the job dead-lettered {dead} records; see {log}")
    return produced, wall, written


def throughput(
    bootstrap: str, tmp: Path, count: int, parallelism: int = 1
) -> tuple[float, float, float]:
    """Kafka baseline, and the job's rate over ``count`` ticks with its start-up subtracted.

    The job runs twice, over ``count // 5`` and ``count`` ticks; the difference in wall time
    is what the extra ticks cost (start-up, topic discovery and shutdown cancel out). Returns
    (baseline ticks/s, job ticks/s, job ticks/s including start-up for the larger run).
    """
    small = count // 5
    _, wall_small, written_small = _bounded_run(
        bootstrap, tmp, small, "throughput-small", parallelism
    )
    baseline, wall, written = _bounded_run(bootstrap, tmp, count, "throughput", parallelism)
    if not 0 < written_small < written:
        raise RuntimeError(f"the job wrote {written_small} and {written} statistics records")
    return baseline, (count - small) / (wall - wall_small), count / wall


def start_feed(
    settings: Any,
    ticks: Iterable[tuple[int, str, float]],
    delay: Callable[[int, int], float],
    on_sent: Callable[[int], None] | None = None,
    linger_ms: int = 0,
) -> threading.Event:
    """Publish ``ticks`` from a background thread; returns the event that stops it.

    ``ticks`` come in event-time order (a simulator without disorder), and as a live feed does,
    a heartbeat goes to every partition of the prices topic every 200 ms through the same
    producer, promising the event time of the next tick: nothing older follows.
    ``delay(sent, event_ms)`` says how long to wait before the next tick (pacing);
    ``on_sent(event_ms)`` is called after each produce (bookkeeping for latencies);
    ``linger_ms`` 0 sends each tick at once (latency runs), more batches them.
    """
    stop = threading.Event()
    producer = Producer(producer_config(settings.kafka, "feed", **{"linger.ms": linger_ms}))
    codec = codec_for("PriceTick")
    topic = settings.topics.prices
    beats = Heartbeats(HeartbeatSink(producer), topic, interval_ms=HEARTBEAT_MS, source="bench")

    def feed() -> None:
        beats.start()
        try:
            for sent, (ms, ticker, price) in enumerate(ticks):
                if stop.is_set():
                    return
                beats.advance(ms)  # this tick is the oldest still to come
                wait = delay(sent, ms)
                if wait > 0:
                    time.sleep(wait)
                value = codec.encode({"ticker": ticker, "price": price, "event_time": ms})
                producer.produce(topic, value, ticker.encode(), timestamp=ms)
                producer.poll(0)
                if on_sent is not None:
                    on_sent(ms)
        finally:
            beats.stop(final=False)

    threading.Thread(target=feed, daemon=True).start()
    return stop


def real_time(_: int, event_ms: int) -> float:
    """Pacing for ticks whose event time is the wall clock."""
    return event_ms / 1000 - time.time()


def latency(bootstrap: str, tmp: Path, seconds: float, rate: float) -> tuple[float, float, int]:
    settings, path = _config(bootstrap, tmp, "latency", bound_ms=200)
    _seed(settings)
    job = _job(path, tmp / "latency-job.log")
    closing: dict[int, float] = {}  # bar index -> wall time of the first tick after its end

    def closes(ms: int) -> None:
        bar = ms // 1000
        # The watermark can pass bar k's end once a tick 200 ms past it is read (with the
        # other partitions there too: their ticks, or heartbeats at most 200 ms later).
        closing.setdefault(bar - 1 if ms % 1000 >= 201 else bar - 2, time.monotonic())

    sim = _simulator(rate=rate, start_ms=int(time.time() * 1000))
    stop = start_feed(settings, (t for b in sim.blocks() for t in b), real_time, closes)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    consumer.assign([TopicPartition(settings.topics.metrics, p, -1) for p in range(3)])
    codec_m = codec_for("PortfolioMetrics")
    samples: list[float] = []
    up_by = time.monotonic() + STARTUP_TIMEOUT_S
    measured_from: float | None = None  # bars closed before this are not measured
    end = math.inf
    while time.monotonic() < end:
        if measured_from is None and time.monotonic() > up_by:
            break
        for message in consumer.consume(100, timeout=0.2):
            if message.error() is not None:
                continue
            now = time.monotonic()
            if measured_from is None:  # the job is up: measure from the bars closed hereafter
                measured_from, end = now + 5.0, now + 5.0 + seconds
            record = codec_m.decode(message.value() or b"")
            closed = closing.get(record["statsTimestamp"] // 1000 - 1)
            if closed is not None and closed >= measured_from:
                samples.append(now - closed)
    stop.set()
    consumer.close()
    _stop(job)
    samples.sort()
    if not samples:
        raise RuntimeError(f"no metrics read; see {tmp / 'latency-job.log'}")
    p99 = samples[min(len(samples) - 1, int(0.99 * len(samples)))]
    return statistics.median(samples), p99, len(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument(
        "--latency-rate", type=float, default=200.0, help="ticks/s in the latency run"
    )
    parser.add_argument("--parallelism", type=int, default=1, help="of the throughput runs")
    args = parser.parse_args(argv)
    with scratch_broker("streamfolio-bench-") as (bootstrap, tmp):
        baseline, job_rate, whole = throughput(bootstrap, tmp, args.ticks, args.parallelism)
        print(f"kafka baseline (produce, one process): {baseline:,.0f} ticks/s")
        print(
            f"job throughput (bounded, parallelism {args.parallelism}, 1 s bars):"
            f" {job_rate:,.0f} ticks/s"
            f"  = {job_rate / baseline:.1%} of the baseline"
            f"  ({whole:,.0f} ticks/s counting the job's start-up)"
        )
        p50, p99, n = latency(bootstrap, tmp, args.latency_seconds, args.latency_rate)
        print(
            f"latency tick → metrics ({n} bars, {args.latency_rate:g} ticks/s, 1 s bars,"
            f" bound 200 ms): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
