"""Scale run: N portfolios of 20 tickers from a universe of 500, on 1 s bars, fed in real time.

Run: ``python bench/scale.py [--portfolios 1000] [--tickers 500] [--rate 1000] [--seconds 120]
[--profile SECONDS] [--stats-every-bars K]``; ``--update-cost-only`` measures the per-portfolio
cost alone (no broker, no job).

It starts its own broker and the PyFlink job (parallelism 1). The universe goes into
``exchange.universe``; the portfolios (20 tickers each, drawn with a fixed seed) into the
configuration; every portfolio is seeded with synthetic initial statistics and equal weights.
Once the job's tasks run, ticks for the whole universe are published in real time (event time =
wall time), with a heartbeat on every partition every 200 ms as a live feed does. The window of
``--seconds`` starts 5 s after the job's first metrics. Figures:

* the newest metrics bar behind the wall clock at the end of the window: a job that keeps up
  stays about one bar + the 200 ms bound behind (the issue asks for at most 2 s);
* metrics records/s against what real time needs (one per portfolio per bar);
* the job's CPU per metrics record (its whole process tree: JVM, Python, decoder), and the
  Python cost of one portfolio update measured outside Flink (``PortfolioProcess`` driven
  directly: a bar in, its timer, statistics and metrics out, the state saved each time).

``--profile S`` runs ``py-spy record`` for S seconds on each of the job's processes from 10 s
into the window (thread mode: the Python functions run in the MiniCluster JVM's embedded
interpreter, which py-spy reads through the JVM's pid; the tick decoder in a separate Python
worker) and keeps the collapsed stacks as ``/tmp/scale-profile-<pid>.txt``. Figures and what
they showed: BENCHMARKS.md, "Ten thousand portfolios".
"""

from __future__ import annotations

import argparse
import os
import subprocess
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

TICKERS_PER_PORTFOLIO = 20


def universe_of(size: int) -> list[str]:
    """The synthetic tickers ``T000``, ``T001``, …

    >>> universe_of(3)
    ['T000', 'T001', 'T002']
    """
    return [f"T{i:03d}" for i in range(size)]


def portfolio_tickers(count: int, universe: list[str], seed: int = 1) -> list[list[str]]:
    """``count`` portfolios of 20 tickers each drawn without replacement, sorted (seeded).

    >>> a = portfolio_tickers(2, universe_of(500)); a == portfolio_tickers(2, universe_of(500))
    True
    >>> [len(t) for t in a], a[0] == sorted(a[0])
    ([20, 20], True)
    """
    rng = np.random.default_rng(seed)
    return [
        sorted(rng.choice(universe, size=TICKERS_PER_PORTFOLIO, replace=False).tolist())
        for _ in range(count)
    ]


def _settings(
    bootstrap: str,
    tmp: Path,
    portfolios: int,
    universe: list[str],
    stats_every: int,
    stats_layout: str = "maps",
) -> tuple[Any, Path]:
    data = yaml.safe_load(example_config_path().read_text())
    token = uuid.uuid4().hex[:6]
    data["kafka"]["bootstrap_servers"] = bootstrap
    data["topics"] = {role: f"scale-{role}-{token}" for role in data["topics"]}
    data["exchange"]["universe"] = list(universe)
    data["flink"].update(
        {
            "max_out_of_orderness_ms": 200,
            "checkpoint_interval_ms": 10_000,
            "checkpoint_dir": str(tmp / "ckpt"),
            "starting_offsets": "earliest",
        }
    )
    if stats_every != 1:
        data["flink"]["stats_every_bars"] = stats_every
    data["flink"]["stats_layout"] = stats_layout
    data["defaults"]["bar_seconds"] = 1
    data["portfolios"] = [
        {"id": f"p{i:05d}", "tickers": tickers, "weights": {t: 0.05 for t in tickers}}
        for i, tickers in enumerate(portfolio_tickers(portfolios, universe))
    ]
    settings = settings_from_mapping(data)
    ensure_topics(bootstrap, topic_specs(settings))
    path = tmp / "scale.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return settings, path


def seed_record(portfolio_id: str, tickers: list[str], timestamp: int) -> dict[str, Any]:
    """Synthetic initial statistics: zero means, a tiny diagonal covariance."""
    return {
        "timestamp": timestamp,
        "portfolio_id": portfolio_id,
        "meanReturns": {t: 0.0 for t in tickers},
        "covarianceMatrix": {a: {b: (1e-8 if a == b else 0.0) for b in tickers} for a in tickers},
        "count": 2,
        "estimator": "welford",
        "half_life_bars": None,
        "tickers": tickers,
    }


def _seed(settings: Any) -> None:
    """Every portfolio's initial statistics and weights, stamped a minute ago."""
    producer = RecordProducer(settings.kafka, component="admin")
    stats, weights = contract(settings, "initial_stats"), contract(settings, "weights")
    now = int(time.time() * 1000) - 60_000
    for p in settings.portfolios:
        ts = list(p.tickers)
        producer.send(stats, seed_record(p.id, ts, now), timestamp_ms=now)
        record = {
            "timestamp": now,
            "portfolio_id": p.id,
            "weights": dict(p.weights),
            "reason": "initial",
            "source": "bench",
        }
        producer.send(weights, record, timestamp_ms=now)
    producer.flush(120)


# ---------------------------------------------------------------- the job's processes, measured


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _wait_running(checkpoints: Path, timeout: float) -> None:
    """Until the job's first checkpoint (taken only once every task runs), or ``timeout``."""
    until = time.monotonic() + timeout
    while time.monotonic() < until and not any(checkpoints.glob("*/chk-*")):
        time.sleep(1.0)


def _profile(pids: list[int], seconds: float, folder: Path) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` on each of ``pids`` that runs Python (the others fail and are ignored)."""
    spy = Path(sys.executable).with_name("py-spy")
    return [
        subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--format",
                "raw",
                "--output",
                str(folder / f"profile-{pid}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


# ------------------------------------------------------------ one portfolio update, outside Flink


class _Runtime:
    """Just enough of Flink's keyed runtime to drive :class:`PortfolioShards` directly."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.key: Any = None
        self.watermark = -(2**63)

    def get_state(self, descriptor: Any) -> Any:
        runtime = self

        class Value:
            def value(self) -> Any:
                return runtime.values.get((descriptor.name, runtime.key))

            def update(self, value: Any) -> None:
                runtime.values[(descriptor.name, runtime.key)] = value

            def clear(self) -> None:
                runtime.values.pop((descriptor.name, runtime.key), None)

        return Value()

    def get_map_state(self, descriptor: Any) -> Any:
        runtime = self

        class Map:
            def _map(self) -> dict[Any, Any]:
                mapping: dict[Any, Any] = runtime.values.setdefault(
                    (descriptor.name, runtime.key), {}
                )
                return mapping

            def put(self, key: Any, value: Any) -> None:
                self._map()[key] = value

            def remove(self, key: Any) -> None:
                self._map().pop(key, None)

            def items(self) -> list[tuple[Any, Any]]:
                return list(self._map().items())

        return Map()

    def timer_service(self) -> Any:
        return self

    def current_watermark(self) -> int:
        return self.watermark

    def register_event_time_timer(self, timestamp: int) -> None:
        pass

    def get_current_key(self) -> Any:
        return self.key


def update_cost(
    portfolios: int = 200, bars: int = 30, stats_every: int = 1, stats_layout: str = "maps"
) -> float:
    """µs of Python per portfolio update (a bar in, its timer: statistics and metrics out),
    ``PortfolioShards`` driven directly as Flink does, state saved as in the job: the median
    over ``bars`` bars of ``portfolios`` portfolios each (in the job's 8 shards)."""
    from streamfolio.core.portfolio import PortfolioSpec
    from streamfolio.flink.operators import PortfolioShards
    from streamfolio.flink.records import ControlMessage, JobControlKind, MemberBars, control_key

    universe = universe_of(500)
    drawn = portfolio_tickers(portfolios, universe)
    specs = {
        f"p{i:05d}": PortfolioSpec(f"p{i:05d}", tuple(ts), 1_000, 31_449_600.0)
        for i, ts in enumerate(drawn)
    }
    process = PortfolioShards(
        specs,
        {"stats": "s", "weights": "w"},
        stats_every_bars=stats_every,
        stats_layout="packed" if stats_layout == "packed" else "maps",
    )
    runtime = _Runtime()
    process.open(runtime)
    members: dict[str, dict[str, tuple[str, ...]]] = {}
    for pid, spec in specs.items():
        ts = list(spec.tickers)
        controls: tuple[tuple[JobControlKind, dict[str, Any]], ...] = (
            ("stats", seed_record(pid, ts, 0)),
            ("weights", {"timestamp": 0, "portfolio_id": pid, "weights": {t: 0.05 for t in ts}}),
        )
        for kind, record in controls:
            message = ControlMessage(pid, kind, record, b"", 0, 0, None)
            runtime.key = control_key(message)
            list(process.process_element2(message, runtime) or ())
        members.setdefault(control_key(message), {})[pid] = spec.tickers
    rng = np.random.default_rng(3)
    paths = 100.0 * np.exp(rng.normal(0, 0.01, (bars + 1, len(universe))).cumsum(0))
    prices = dict(zip(universe, paths.T.tolist(), strict=True))
    per_bar: list[float] = []
    for k in range(1, bars + 1):
        closes = {t: prices[t][k] for t in universe}
        returns = {t: float(np.log(prices[t][k] / prices[t][k - 1])) for t in universe}
        runtime.watermark = k * 1_000 - 2
        start = time.perf_counter()
        for shard, mine in members.items():
            runtime.key = shard
            process.process_element1(MemberBars(shard, 1_000, k, closes, returns, mine), runtime)
        runtime.watermark = k * 1_000 + 999
        for shard in members:
            runtime.key = shard
            for _ in process.on_timer(k * 1_000 + 999, runtime) or ():
                pass
        if k > 2:  # after the warm-up bar and the first vector
            per_bar.append(time.perf_counter() - start)
    # The median bar: the machine is shared, and other work lands on some bars.
    return float(np.median(per_bar)) / portfolios * 1e6


# ----------------------------------------------------------------------------------- the run


def run(
    portfolios: int,
    tickers: int,
    rate: float,
    seconds: float,
    profile: float = 0.0,
    stats_every: int = 1,
    lead: float = 0.0,
    parallelism: int = 1,
    stats_layout: str = "maps",
) -> None:
    universe = universe_of(tickers)
    with scratch_broker("streamfolio-scale-") as (bootstrap, tmp):
        settings, path = _settings(bootstrap, tmp, portfolios, universe, stats_every, stats_layout)
        _seed(settings)
        job = _job(path, tmp / "job.log", "--parallelism", str(parallelism))
        try:
            # The feed starts once the job's tasks run: a backlog of ticks published while a
            # JVM starts (a minute or more on a busy machine) is not what this measures.
            _wait_running(tmp / "ckpt", STARTUP_TIMEOUT_S)
            count, elapsed, lag, cpu, trace = _measure(
                job,
                settings,
                universe,
                rate,
                seconds,
                profile,
                _first_metrics_timeout(portfolios) + lead,
                lead,
            )
        finally:
            _stop(job)
            for found in tmp.glob("profile-*.txt"):
                if found.stat().st_size:
                    kept = Path(f"/tmp/scale-{found.name}")
                    kept.write_bytes(found.read_bytes())
                    print(f"  profile: {kept}")
        if not count:
            kept = Path(f"/tmp/scale-job-{portfolios}.log")  # the scratch folder goes next
            kept.write_bytes((tmp / "job.log").read_bytes())
            wait = _first_metrics_timeout(portfolios)
            raise SystemExit(f"no metrics {wait:.0f} s after the feed started; see {kept}")
    print(
        f"{portfolios} portfolios x {TICKERS_PER_PORTFOLIO} of {tickers} tickers, 1 s bars,"
        f" {rate:g} ticks/s, statistics every {stats_every} bar(s)"
        f" ({stats_layout}), {elapsed:.0f} s"
        f" (ticks {lead:g} s after the heartbeats), parallelism {parallelism}:"
    )
    # Real time needs one metrics record per portfolio per 1 s bar.
    print(f"  metrics records/s {count / elapsed:,.0f} (real time needs about {portfolios:,}/s)")
    print(f"  newest metrics bar {lag:.1f} s behind the wall clock at the end")
    steps = ", ".join(f"{s:.1f} s at {30 * i} s" for i, s in enumerate(trace))
    print(f"  behind on the way: {steps}")
    print(f"  job CPU per metrics record {cpu / count * 1e6:,.0f} µs ({cpu / elapsed:.2f} cores)")
    load = os.getloadavg()
    print(f"  machine load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


def metrics_timestamp(value: bytes) -> int:
    """The ``timestamp`` of a ``PortfolioMetrics`` record, read without decoding the rest (the
    bench reads 10,000 records a second on the 2 cores it measures): it follows the id and
    three doubles.

    >>> from streamfolio.serde import codec_for
    >>> record = {"portfolioId": "p" * 70, "risk": 0.1, "expectedReturn": 0.1, "sharpRatio": 1.0,
    ...           "timestamp": 1_765_000_000_123}
    >>> metrics_timestamp(codec_for("PortfolioMetrics").encode(record))
    1765000000123
    """

    def varint(at: int) -> tuple[int, int]:
        shift = result = 0
        while True:
            byte = value[at]
            result |= (byte & 0x7F) << shift
            at += 1
            if byte < 0x80:
                return (result >> 1) ^ -(result & 1), at
            shift += 7

    size, at = varint(0)
    stamp, _ = varint(at + size + 24)
    return stamp


def _measure(
    job: subprocess.Popen[bytes],
    settings: Any,
    universe: list[str],
    rate: float,
    seconds: float,
    profile: float,
    first_metrics_timeout: float,
    lead: float = 0.0,
) -> tuple[int, float, float, float, list[float]]:
    """Feed ticks in real time and read the metrics: ``(records in the window, its length in
    s, newest bar's lag behind the wall clock at its end in s, the job's CPU seconds in it, the
    lag at the window's start and every 30 s of it)``."""
    n = len(universe)
    sim = TickSimulator(
        Calibration(tuple(universe), np.zeros(n), np.eye(n) * 1e-9, np.full(n, 100.0)),
        rate,
        int((time.time() + lead) * 1000),
        seed=2,
    )
    # A live feed batches its ticks (the CSE poller publishes a board at a time); a request per
    # tick would cost the broker, on the same 2 cores, more than the job.
    stop = start_feed(settings, (t for b in sim.blocks() for t in b), real_time, linger_ms=20)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": uuid.uuid4().hex}
    )
    consumer.assign([TopicPartition(settings.topics.metrics, p, -1) for p in range(3)])
    count = 0
    newest = 0
    up_by = time.monotonic() + first_metrics_timeout
    started: float | None = None  # the window's start, once the job is up
    cpu_start = 0.0
    spies: list[subprocess.Popen[bytes]] = []
    trace: list[float] = []
    try:
        while started is None or time.monotonic() - started < seconds:
            now = time.monotonic()
            if started is None and now > up_by:
                break
            if started is not None and profile and not spies and now - started > 10:
                spies = _profile(_tree(job.pid), profile, _folder(settings))
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                now = time.monotonic()
                if started is None:
                    started = now + 5.0
                newest = max(newest, metrics_timestamp(message.value() or b""))
                if now >= started:
                    if count == 0:
                        cpu_start = _cpu_seconds(_tree(job.pid))
                    count += 1
                    if now - started >= 30 * len(trace):
                        trace.append(time.time() - newest / 1000)
        cpu = _cpu_seconds(_tree(job.pid)) - cpu_start
        lag = time.time() - newest / 1000 if newest else float("nan")
        elapsed = time.monotonic() - started if started is not None else 0.0
    finally:
        stop.set()
        consumer.close()
        for spy in spies:
            try:
                spy.wait(profile + 60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
    return count, elapsed, lag, cpu, trace


def _first_metrics_timeout(portfolios: int) -> float:
    """How long after the feed starts the first metrics may take: a job far behind real time
    (10,000 portfolios here) first works through every portfolio's initial statistics and
    weights and the bars read meanwhile, one portfolio at a time.

    >>> _first_metrics_timeout(1000), _first_metrics_timeout(10_000)
    (300.0, 900.0)
    """
    return max(STARTUP_TIMEOUT_S, portfolios * 0.09)


def _folder(settings: Any) -> Path:
    """The run's scratch folder (where its checkpoints go)."""
    return Path(settings.flink.checkpoint_dir).parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--portfolios", type=int, default=1000)
    parser.add_argument("--tickers", type=int, default=500, help="the universe's size")
    parser.add_argument("--rate", type=float, default=1000.0, help="ticks/s over the universe")
    parser.add_argument("--seconds", type=float, default=120.0, help="the measured window")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy for this many s")
    parser.add_argument("--stats-every-bars", type=int, default=1)
    parser.add_argument(
        "--lead-seconds",
        type=float,
        default=0.0,
        help="ticks start this long after the feed's heartbeats, which move the watermark past "
        "the initial statistics' time first (a market's pre-open): the job applies every seed "
        "before the first bar rather than in it",
    )
    parser.add_argument(
        "--parallelism",
        type=int,
        default=1,
        help="the job's (2 and more: process mode, one Python worker per slot)",
    )
    parser.add_argument(
        "--stats-layout",
        choices=("maps", "packed"),
        default="maps",
        help="flink.stats_layout: the reference's nested maps, or packed arrays",
    )
    parser.add_argument("--update-cost-only", action="store_true")
    args = parser.parse_args(argv)
    # At the run's size: the shard's costs per bar (its bar, its state) are shared by its members.
    cost = update_cost(
        args.portfolios,
        bars=20,
        stats_every=args.stats_every_bars,
        stats_layout=args.stats_layout,
    )
    print(
        f"one portfolio update outside Flink ({args.portfolios:,} portfolios in 8 shards): "
        f"{cost:,.1f} µs of Python"
    )
    if not args.update_cost_only:
        run(
            args.portfolios,
            args.tickers,
            args.rate,
            args.seconds,
            args.profile,
            args.stats_every_bars,
            args.lead_seconds,
            args.parallelism,
            args.stats_layout,
        )


if __name__ == "__main__":
    main()
