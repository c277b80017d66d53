"""Rebalance reaction time: from the tick that closes a bar whose metrics breach the threshold
to the rebalancer's new weights being readable on the weights topic.

Run: ``python bench/rebalance.py [--seconds 150]``. It starts its own broker, the PyFlink job
and the rebalancer, and a simulator on daily bars (ten trading days per second of wall time)
whose banks alternately crash and recover every three seconds, so the portfolio's Sharpe ratio
keeps crossing its threshold; a heartbeat goes to every partition every 200 ms as a live feed's
does. For every rebalance event (decided on the metrics of bar k), the reaction time is: weights
readable − produce time of the first tick stamped after bar k's end plus the out-of-orderness
bound (the earliest bar k can close). Prints p50 and p99.

The simulated clock runs 864,000 times the wall clock, so it starts years in the past (a tick
ahead of the wall clock is refused, ``validation.max_future_skew_ms``), with the initial state
stamped at its start so that it precedes the first bar.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import _job, _seed, _stop, scratch_broker, start_feed
from streamfolio.config import (
    example_config_path,
    settings_from_mapping,
)
from streamfolio.feeds.run import calibration_for
from streamfolio.feeds.simulate import TickSimulator, crash_regime
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.serde import codec_for

DAY_MS = 86_400_000
BOUND_MS = 2_000
SPEEDUP = 864_000.0  # ten simulated days per wall second
RATE = 300.0  # ticks per wall second
TICKERS = ["AKT", "ATW", "BCP", "BOA", "IAM", "TGC"]


def _settings(bootstrap: str, tmp: Path) -> tuple[Any, Path]:
    data = yaml.safe_load(example_config_path().read_text())
    token = uuid.uuid4().hex[:6]
    data["kafka"]["bootstrap_servers"] = bootstrap
    data["topics"] = {role: f"react-{role}-{token}" for role in data["topics"]}
    data["flink"].update(
        {
            "max_out_of_orderness_ms": BOUND_MS,
            "checkpoint_dir": str(tmp / "ckpt"),
            "starting_offsets": "earliest",
        }
    )
    data["rebalancer"] = {"group_id": f"react-{token}"}
    data["defaults"].update(
        {"bar_seconds": 86_400, "estimator": {"kind": "ewm", "half_life_bars": 8}}
    )
    data["portfolios"] = [
        {
            "id": "react",
            "tickers": TICKERS,
            "weights": {t: 1 / len(TICKERS) for t in TICKERS},
            "bounds": {"max": 0.5},
            "policy": {
                "sharpe_threshold": 0.5,
                "band": 0.1,
                "cooldown_seconds": 5 * 86_400,
                "min_improvement": 0.05,
                "max_turnover": 1.0,
                "min_observations": 3,
            },
        }
    ]
    settings = settings_from_mapping(data)
    ensure_topics(bootstrap, topic_specs(settings))
    path = tmp / "react.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return settings, path


def _regimes(calibration: Any, seconds: float) -> dict[float, Any]:
    """Banks crash for 3 s of wall time, recover for 3 s, and so on (event-time offsets)."""
    crash = crash_regime(calibration, ["ATW", "BCP", "BOA"], -6.0)
    calm = calibration.mean_per_second
    return {k * 3.0 * SPEEDUP: (crash if k % 2 else calm) for k in range(1, int(seconds / 3) + 2)}


def run(seconds: float) -> list[float]:
    with scratch_broker("streamfolio-react-") as (bootstrap, tmp):
        return _measure(bootstrap, tmp, seconds)


def _measure(bootstrap: str, tmp: Path, seconds: float) -> list[float]:
    import subprocess

    settings, path = _settings(bootstrap, tmp)
    # A UTC midnight far enough back that no tick of the run is ahead of the wall clock.
    run_days = int((seconds + 15 + 60) * SPEEDUP * 1000) // DAY_MS + 1
    start_ms = (int(time.time() * 1000) // DAY_MS - run_days) * DAY_MS
    _seed(settings, at_ms=start_ms)
    job = _job(path, tmp / "job.log")
    with (tmp / "rebalancer.log").open("wb") as log:
        rebalancer = subprocess.Popen(
            [sys.executable, "-m", "streamfolio.cli", "rebalancer", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    time.sleep(15)
    calibration = calibration_for(settings, "history", 0.8)
    sim = TickSimulator(
        calibration, RATE / SPEEDUP, start_ms, seed=9, regimes=_regimes(calibration, seconds)
    )
    closing: dict[int, float] = {}
    wall0 = time.monotonic()

    def paced(sent: int, _: int) -> float:
        return wall0 + sent / RATE - time.monotonic()

    def closes(ms: int) -> None:
        # This tick's watermark closes every bar ending at or before ms - bound.
        closing.setdefault((ms - BOUND_MS) // DAY_MS - 1, time.monotonic())

    stop = start_feed(settings, (t for b in sim.blocks() for t in b), paced, closes)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(settings.topics.weights, p, 0) for p in range(3)])
    weights_codec = codec_for("Weights")
    reactions: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for message in consumer.consume(100, timeout=0.2):
            if message.error() is not None:
                continue
            record = weights_codec.decode(message.value() or b"")
            if record["source"] != "rebalancer":
                continue
            bar = record["timestamp"] // DAY_MS - 1
            if bar in closing:
                reactions.append(time.monotonic() - closing[bar])
    stop.set()
    consumer.close()
    _stop(rebalancer)
    _stop(job)
    return reactions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args(argv)
    reactions = sorted(run(args.seconds))
    if not reactions:
        raise SystemExit("no rebalance happened; see the logs")
    p99 = reactions[min(len(reactions) - 1, int(0.99 * len(reactions)))]
    print(
        f"rebalance reaction time over {len(reactions)} rebalances: "
        f"p50 {statistics.median(reactions) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {reactions[-1] * 1000:.0f} ms"
    )
    print("per rebalance (s):", " ".join(f"{r:.2f}" for r in reactions))


if __name__ == "__main__":
    main()
