"""Scale run: 1,000 portfolios of 20 tickers each on 1 s bars, fed in real time.

Run: ``python bench/scale.py [--portfolios 1000] [--tickers 100] [--rate 1000] [--seconds 60]``.
It starts its own broker and the PyFlink job (parallelism 1), seeds every portfolio with
synthetic initial statistics and equal weights, publishes ticks for a universe of ``--tickers``
tickers in real time (event time = wall time) with a heartbeat on every partition every 200 ms
as a live feed does (the job's watermark moves with the data alone), and reports whether the job
keeps up: metrics records per second against what real time needs (one per portfolio per bar),
and the lag of the newest metrics' bar behind the wall clock at the end. The ``--seconds`` window
starts 5 s after the job's first metrics (a JVM on a busy machine can take a minute or two to
start; the catching up with the ticks produced meanwhile is not counted).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import STARTUP_TIMEOUT_S, _job, _stop, real_time, scratch_broker, start_feed
from streamfolio.config import example_config_path, settings_from_mapping
from streamfolio.feeds.simulate import Calibration, TickSimulator
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import RecordProducer
from streamfolio.kafka.topics import contract
from streamfolio.serde import codec_for


def _settings(bootstrap: str, tmp: Path, portfolios: int, universe: list[str]) -> tuple[Any, Path]:
    rng = np.random.default_rng(1)
    data = yaml.safe_load(example_config_path().read_text())
    token = uuid.uuid4().hex[:6]
    data["kafka"]["bootstrap_servers"] = bootstrap
    data["topics"] = {role: f"scale-{role}-{token}" for role in data["topics"]}
    data["flink"].update(
        {
            "max_out_of_orderness_ms": 200,
            "checkpoint_interval_ms": 10_000,
            "checkpoint_dir": str(tmp / "ckpt"),
            "starting_offsets": "earliest",
        }
    )
    data["defaults"]["bar_seconds"] = 1
    data["portfolios"] = []
    for i in range(portfolios):
        tickers = sorted(rng.choice(universe, size=20, replace=False).tolist())
        data["portfolios"].append(
            {"id": f"p{i:04d}", "tickers": tickers, "weights": {t: 0.05 for t in tickers}}
        )
    settings = settings_from_mapping(data)
    ensure_topics(bootstrap, topic_specs(settings))
    path = tmp / "scale.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return settings, path


def _seed(settings: Any) -> None:
    producer = RecordProducer(settings.kafka, component="admin")
    stats, weights = contract(settings, "initial_stats"), contract(settings, "weights")
    now = int(time.time() * 1000) - 60_000
    for p in settings.portfolios:
        ts = list(p.tickers)
        record = {
            "timestamp": now,
            "portfolio_id": p.id,
            "meanReturns": {t: 0.0 for t in ts},
            "covarianceMatrix": {a: {b: (1e-8 if a == b else 0.0) for b in ts} for a in ts},
            "count": 2,
            "estimator": "welford",
            "half_life_bars": None,
            "tickers": ts,
        }
        producer.send(stats, record, timestamp_ms=now)
        producer.send(
            weights,
            {
                "timestamp": now,
                "portfolio_id": p.id,
                "weights": dict(p.weights),
                "reason": "initial",
                "source": "bench",
            },
            timestamp_ms=now,
        )
    producer.flush(60)


def run(portfolios: int, tickers: int, rate: float, seconds: float) -> None:
    universe = [f"T{i:03d}" for i in range(tickers)]
    with scratch_broker("streamfolio-scale-") as (bootstrap, tmp):
        settings, path = _settings(bootstrap, tmp, portfolios, universe)
        _seed(settings)
        job = _job(path, tmp / "job.log")
        time.sleep(15)
        n = len(universe)
        sim = TickSimulator(
            Calibration(tuple(universe), np.zeros(n), np.eye(n) * 1e-9, np.full(n, 100.0)),
            rate,
            int(time.time() * 1000),
            seed=2,
        )
        # A live feed batches its ticks (the CSE poller publishes a board at a time); a
        # request per tick would cost the broker, on the same 2 cores, more than the job.
        stop = start_feed(settings, (t for b in sim.blocks() for t in b), real_time, linger_ms=20)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
        consumer.assign([TopicPartition(settings.topics.metrics, p, -1) for p in range(3)])
        metrics_codec = codec_for("PortfolioMetrics")
        count = 0
        newest = 0
        up_by = time.monotonic() + STARTUP_TIMEOUT_S
        started: float | None = None  # the window's start, once the job is up
        try:
            while started is None or time.monotonic() - started < seconds:
                if started is None and time.monotonic() > up_by:
                    break
                for message in consumer.consume(1000, timeout=0.5):
                    if message.error() is not None:
                        continue
                    now = time.monotonic()
                    if started is None:
                        started = now + 5.0
                    if now >= started:
                        count += 1
                        record = metrics_codec.decode(message.value() or b"")
                        newest = max(newest, record["timestamp"])
        finally:
            stop.set()
            consumer.close()
            _stop(job)
        if started is None:
            raise SystemExit(f"no metrics after {STARTUP_TIMEOUT_S:.0f} s; see {tmp / 'job.log'}")
        elapsed = time.monotonic() - started
        lag = time.time() - newest / 1000 if newest else float("nan")
        need = portfolios  # one metrics record per portfolio per 1 s bar in real time
        print(f"{portfolios} portfolios x 20 of {tickers} tickers, 1 s bars, {rate:g} ticks/s:")
        print(f"  metrics records/s {count / elapsed:,.0f} (real time needs about {need:,}/s)")
        print(f"  newest metrics bar {lag:.1f} s behind the wall clock at the end")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--portfolios", type=int, default=1000)
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    run(args.portfolios, args.tickers, args.rate, args.seconds)


if __name__ == "__main__":
    main()
