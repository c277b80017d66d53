"""Kafka baseline: produce and consume rates of Avro-encoded price ticks through a local broker.

Run: ``python bench/kafka.py [--ticks 500000] [--bootstrap HOST:PORT]``. Without ``--bootstrap``
it starts its own single-node KRaft broker (the project's tooling) on free ports in a temporary
directory and stops it afterwards. It prints, in one run:

* encode only: PriceTick records → Avro bytes (the CPU cost of the format);
* produce: encode + ``produce`` + final flush with acks=all and idempotence, keyed by ticker,
  into a 3-partition topic, from one process;
* consume: read + Avro decode of the same messages from one consumer.

These figures are the baseline the streaming job is compared with (``bench/pipeline.py``).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from streamfolio.config import KafkaSettings, LocalKafkaSettings
from streamfolio.feeds.simulate import Calibration, TickSimulator
from streamfolio.kafka.admin import TopicSpec, ensure_topics
from streamfolio.kafka.clients import producer_config
from streamfolio.kafka.local import LocalKafka, repo_root
from streamfolio.serde import codec_for


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _ticks(count: int) -> list[dict[str, object]]:
    import numpy as np

    tickers = ("AKT", "ATW", "BOA", "BCP", "MDP", "MUT", "IAM", "RIS", "TGC", "ADI", "IMO")
    n = len(tickers)
    calibration = Calibration(tickers, np.zeros(n), np.eye(n) * 1e-8, np.full(n, 100.0))
    simulator = TickSimulator(calibration, rate=10_000.0, start_ms=1_790_000_000_000, seed=1)
    return [
        {
            "ticker": t,
            "price": p,
            "event_time": ms,
            "volume": None,
            "source": "sim",
            "sequence": None,
        }
        for ms, t, p in simulator.take(count)
    ]


def bench(bootstrap: str, count: int, repeats: int) -> None:
    codec = codec_for("PriceTick")
    records = _ticks(count)

    encode_rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        values = [codec.encode(r) for r in records]
        encode_rates.append(count / (time.perf_counter() - start))
    size = sum(len(v) for v in values)
    keys = [str(r["ticker"]).encode() for r in records]
    stamps = [int(r["event_time"]) for r in records]  # type: ignore[call-overload]

    produce_rates = []
    topic = ""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    for _ in range(repeats):
        topic = f"bench-prices-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, [TopicSpec(topic, 3, 1, {})])
        producer = Producer(producer_config(kafka, "feed"))
        start = time.perf_counter()
        for record, key, stamp in zip(records, keys, stamps, strict=True):
            value = codec.encode(record)
            while True:
                try:
                    producer.produce(topic, value, key, timestamp=stamp)
                    break
                except BufferError:
                    producer.poll(0.01)
        left = producer.flush(120)
        elapsed = time.perf_counter() - start
        if left:
            raise RuntimeError(f"{left} messages not delivered")
        produce_rates.append(count / elapsed)

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.min.bytes": 1_000_000,
            "fetch.wait.max.ms": 50,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen = 0
    start = time.perf_counter()
    while seen < count:
        for message in consumer.consume(10_000, timeout=1.0):
            if message.error() is None:
                codec.decode(message.value() or b"")
                seen += 1
    consume_rate = count / (time.perf_counter() - start)
    consumer.close()

    mb = size / count / 1e6
    encode = statistics.median(encode_rates)
    produce = statistics.median(produce_rates)
    print(f"price ticks: {count:,} per run, {size / count:.1f} bytes each (Avro), {repeats} runs")
    print(f"{'stage':<28} {'ticks/s':>12} {'MB/s':>8}")
    print(f"{'encode only':<28} {encode:>12,.0f} {encode * mb:>8.1f}")
    print(f"{'produce (encode+acks=all)':<28} {produce:>12,.0f} {produce * mb:>8.1f}")
    print(f"{'consume (read+decode)':<28} {consume_rate:>12,.0f} {consume_rate * mb:>8.1f}")
    print(f"produce / encode-only ratio: {produce / encode:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ticks", type=int, default=500_000, help="ticks per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = parser.parse_args(argv)
    if args.bootstrap:
        bench(args.bootstrap, args.ticks, args.repeats)
        return
    with tempfile.TemporaryDirectory(prefix="streamfolio-bench-") as tmp:
        port, controller = _free_ports(2)
        settings = KafkaSettings(
            bootstrap_servers=f"localhost:{port}",
            local=LocalKafkaSettings(port=port, controller_port=controller, data_dir=Path(tmp)),
        )
        broker = LocalKafka(settings, repo_root(), progress=lambda line: print(line, flush=True))
        broker.up(timeout=120)
        try:
            bench(settings.bootstrap_servers, args.ticks, args.repeats)
        finally:
            broker.down()


if __name__ == "__main__":
    main()
