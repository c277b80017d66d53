"""The streaming job end to end: throughput and latency, next to the Kafka-only baseline.

Run: ``python bench/pipeline.py [--ticks 200000] [--latency-seconds 60]``. It starts its own
single-node broker on free ports and, in one run, measures:

1. **Kafka baseline**: producing the same Avro ticks from one process (acks=all), ticks/s.
2. **Throughput**: the ticks are produced first, then the job runs with a bounded source (to
   the end offsets) over two portfolios of the 11 CSE tickers on 1 s bars, once over a fifth of
   the ticks and once over all of them; ticks/s is the extra ticks over the extra wall time, so
   JVM start-up and shutdown are excluded.
3. **Latency**: the job runs unbounded while the simulator publishes ticks in real time
   (event time = wall time, 1 s bars, bound 200 ms); for every metrics record, the time from
   the produce of the first tick after its bar's end (the tick whose watermark closes the bar)
   to the metrics being readable; p50 and p99.

The figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
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
from streamfolio.feeds.simulate import Calibration, TickSimulator
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import producer_config
from streamfolio.kafka.local import LocalKafka, repo_root
from streamfolio.serde import codec_for

TICKERS = ("AKT", "ATW", "BOA", "BCP", "MDP", "MUT", "IAM", "RIS", "TGC", "ADI", "IMO")


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
            "idleness_ms": 1000,
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


def _seed(settings: Any) -> None:
    from streamfolio.state import initial_state, publish_state

    publish_state(settings, initial_state(settings))


def _simulator(rate: float, start_ms: int) -> TickSimulator:
    import numpy as np

    n = len(TICKERS)
    calibration = Calibration(TICKERS, np.zeros(n), np.eye(n) * 1e-9, np.full(n, 100.0))
    return TickSimulator(calibration, rate=rate, start_ms=start_ms, seed=3)


def _produce_all(settings: Any, ticks: list[tuple[int, str, float]]) -> float:
    codec = codec_for("PriceTick")
    producer = Producer(producer_config(settings.kafka))
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
    return len(ticks) / (time.perf_counter() - start)


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
    # After the initial statistics (stamped with the history's last day), as live ticks are.
    ticks = _simulator(rate=2_000.0, start_ms=int(time.time() * 1000)).take(count)
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

    ``delay(sent, event_ms)`` says how long to wait before the next tick (pacing);
    ``on_sent(event_ms)`` is called after each produce (bookkeeping for latencies);
    ``linger_ms`` 0 sends each tick at once (latency runs), more batches them.
    """
    stop = threading.Event()
    producer = Producer(producer_config(settings.kafka, **{"linger.ms": linger_ms}))
    codec = codec_for("PriceTick")
    topic = settings.topics.prices

    def feed() -> None:
        for sent, (ms, ticker, price) in enumerate(ticks):
            if stop.is_set():
                return
            wait = delay(sent, ms)
            if wait > 0:
                time.sleep(wait)
            value = codec.encode({"ticker": ticker, "price": price, "event_time": ms})
            producer.produce(topic, value, ticker.encode(), timestamp=ms)
            producer.poll(0)
            if on_sent is not None:
                on_sent(ms)

    threading.Thread(target=feed, daemon=True).start()
    return stop


def real_time(_: int, event_ms: int) -> float:
    """Pacing for ticks whose event time is the wall clock."""
    return event_ms / 1000 - time.time()


def latency(bootstrap: str, tmp: Path, seconds: float, rate: float) -> tuple[float, float, int]:
    settings, path = _config(bootstrap, tmp, "latency", bound_ms=200)
    _seed(settings)
    job = _job(path, tmp / "latency-job.log")
    time.sleep(12)  # the MiniCluster starts; ticks are produced from now, in real time
    closing: dict[int, float] = {}  # bar index -> wall time of the first tick after its end

    def closes(ms: int) -> None:
        bar = ms // 1000
        # The watermark passes bar k's end once a tick 200 ms past it is read.
        closing.setdefault(bar - 1 if ms % 1000 >= 201 else bar - 2, time.monotonic())

    sim = _simulator(rate=rate, start_ms=int(time.time() * 1000))
    stop = start_feed(settings, (t for b in sim.blocks() for t in b), real_time, closes)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    consumer.assign([TopicPartition(settings.topics.metrics, p, -1) for p in range(3)])
    codec_m = codec_for("PortfolioMetrics")
    samples: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for message in consumer.consume(100, timeout=0.2):
            if message.error() is not None:
                continue
            record = codec_m.decode(message.value() or b"")
            bar = record["statsTimestamp"] // 1000 - 1
            if bar in closing:
                samples.append(time.monotonic() - closing[bar])
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
