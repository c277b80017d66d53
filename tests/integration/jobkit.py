"""What the integration tests of the streaming job share: fresh topics, producing, reading the
job's outputs, running the job in its own process, and comparing with the replay."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.moments import moments_from_prior, stats_record
from streamfolio.kafka.admin import KEEP_FOREVER, ensure_topics, topic_specs
from streamfolio.messages import Heartbeat, PortfolioStats
from streamfolio.replay import ReplayEvent, Tick
from streamfolio.serde import codec_for, encode_heartbeat

if TYPE_CHECKING:
    from conftest import KafkaBroker  # tests/integration/conftest.py

ROOT = Path(__file__).resolve().parents[2]
# PyFlink's thread mode hangs at start-up about once in thirty runs (docs/flink.md, caveats);
# a red run for that says nothing about the code, so the tests' jobs use process mode.
FLINK_TEST_ENV = {**os.environ, "STREAMFOLIO_FLINK_PYTHON_MODE": "process"}
JOB_TIMEOUT = float(
    os.environ.get("STREAMFOLIO_TEST_JOB_TIMEOUT", "300")
)  # generous: a busy 2-core CI machine starts JVMs slowly


@dataclass(frozen=True)
class Message:
    """One Kafka message to produce (``partition`` None: by key)."""

    role: str
    value: bytes
    key: bytes | None
    timestamp_ms: int
    partition: int | None = None


def run_settings(
    broker: KafkaBroker,
    tmp: Path,
    token: str,
    portfolios: list[dict[str, Any]],
    metrics: dict[str, Any] | None = None,
    **flink: Any,
) -> tuple[Settings, Path]:
    """The broker's settings with fresh topics (suffixed ``token``), the scenario's portfolios
    and ``flink`` overrides; written to a YAML file for the job process."""
    data = yaml.safe_load(broker.config_path.read_text(encoding="utf-8"))
    data["topics"] = {role: f"{name}-{token}" for role, name in data["topics"].items()}
    data["portfolios"] = portfolios
    if metrics is not None:
        data["metrics"] = metrics
    data["flink"] = {
        **data.get("flink", {}),
        "checkpoint_interval_ms": 1_000,
        "checkpoint_dir": str(tmp / "checkpoints"),
        "starting_offsets": "earliest",
        **flink,
    }
    settings = settings_from_mapping(data)
    path = tmp / f"{token}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    # The scenario's event times are in 2025: with the broker's time-based retention (7 days,
    # judged on record timestamps) its records would be deleted at the next retention check.
    specs = [
        replace(spec, configs={**spec.configs, **KEEP_FOREVER}) for spec in topic_specs(settings)
    ]
    ensure_topics(broker.bootstrap, specs)
    return settings, path


def heartbeats(settings: Settings, time_ms: int) -> list[Message]:
    """A heartbeat at ``time_ms`` for every partition of the prices topic."""
    value = encode_heartbeat(Heartbeat(time_ms, "test"))
    return [
        Message("prices", value, None, time_ms, partition=p)
        for p in range(settings.kafka.partitions)
    ]


def produce(settings: Settings, messages: Sequence[Message]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    for m in messages:
        extra: dict[str, Any] = {} if m.partition is None else {"partition": m.partition}
        while True:
            try:
                producer.produce(
                    getattr(settings.topics, m.role),
                    value=m.value,
                    key=m.key,
                    timestamp=m.timestamp_ms,
                    **extra,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


class Outputs:
    """Everything the job wrote to its output topics so far (read_committed), decoded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"test-{settings.topics.metrics}-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        topics = [
            settings.topics.updated_stats,
            settings.topics.metrics,
            settings.topics.dead_letter,
        ]
        self.consumer.assign(
            [TopicPartition(t, p, -2) for t in topics for p in range(settings.kafka.partitions)]
        )
        self.stats: dict[str, list[dict[str, Any]]] = {}
        self.metrics: dict[str, list[dict[str, Any]]] = {}
        self.dead: list[dict[str, Any]] = []

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            topic, value, key = message.topic(), message.value(), message.key()
            if topic == self.settings.topics.updated_stats:
                record = codec_for("PortfolioStats").decode(value)
                assert key == record["portfolio_id"].encode()
                self.stats.setdefault(record["portfolio_id"], []).append(record)
            elif topic == self.settings.topics.metrics:
                record = codec_for("PortfolioMetrics").decode(value)
                assert key == record["portfolioId"].encode()
                self.metrics.setdefault(record["portfolioId"], []).append(record)
            else:
                assert key is None
                self.dead.append(codec_for("DeadLetter").decode(value))

    def wait_for(
        self,
        condition: Callable[[], bool],
        job: JobProcess,
        what: str,
        every_poll: Callable[[], None] | None = None,
    ) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not condition():
            job.check_alive()
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}; have {self.summary()}; log: {job.log_tail()}; "
                f"watermarks:\n{job.watermarks()}\n{self.transactions()}"
            )
            if every_poll is not None:
                every_poll()
            self.poll()

    def summary(self) -> str:
        """Counts of what was read, for failure messages."""
        stats = {k: (len(v), v[-1]["timestamp"]) for k, v in self.stats.items()}
        metrics = {k: len(v) for k, v in self.metrics.items()}
        dead = Counter(d["reason"] for d in self.dead)
        return f"stats {stats}, metrics {metrics}, dead letters {dict(dead)}"

    def transactions(self) -> str:
        """What separates "the job wrote nothing more" from "Kafka holds the job's committed
        output back" (for failure messages): each output partition's read_committed position
        against its end, and the newest statistics bar of each portfolio read uncommitted."""
        lines = []
        for tp in self.consumer.position(self.consumer.assignment()):
            _, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            if tp.offset >= 0 and tp.offset < high:
                lines.append(f"{tp.topic}[{tp.partition}] read to {tp.offset} of {high}")
        uncommitted = Consumer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "group.id": f"test-uncommitted-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
            }
        )
        topic = self.settings.topics.updated_stats
        uncommitted.assign(
            [TopicPartition(topic, p, -2) for p in range(self.settings.kafka.partitions)]
        )
        newest: dict[str, int] = {}
        deadline = time.monotonic() + 5.0
        try:
            while time.monotonic() < deadline:
                message = uncommitted.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                record = codec_for("PortfolioStats").decode(message.value())
                key = record["portfolio_id"]
                newest[key] = max(newest.get(key, 0), record["timestamp"])
        finally:
            uncommitted.close()
        behind = "; ".join(lines) or "none"
        return f"read_committed short of the end: {behind}; newest uncommitted bars: {newest}"

    def last_stats_time(self, portfolio_id: str) -> int:
        records = self.stats.get(portfolio_id, [])
        return records[-1]["timestamp"] if records else 0

    def close(self) -> None:
        self.consumer.close()


class JobProcess:
    """``python -m streamfolio.flink.job`` in its own process group (JVM included)."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        self.rest_port = free_port()
        self._out = log.open("ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamfolio.flink.job", "--config", str(config), *args],
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Flink's own log next to the job's output (the default is shared by every job).
            env={
                **FLINK_TEST_ENV,
                "FLINK_LOG_DIR": str(log.parent / f"{log.stem}-flink"),
                "STREAMFOLIO_FLINK_REST_PORT": str(self.rest_port),
            },
        )

    def check_alive(self) -> None:
        code = self.proc.poll()
        assert code is None or code == 0, f"job exited with {code}: {self.log_tail()}"

    def watermarks(self) -> str:
        """Each running task's current input watermark (for failure messages), from the
        MiniCluster's REST API."""
        base = f"http://127.0.0.1:{self.rest_port}"
        try:
            jobs = _get_json(f"{base}/jobs")["jobs"]
            lines = []
            for job in jobs:
                detail = _get_json(f"{base}/jobs/{job['id']}")
                for vertex in detail["vertices"]:
                    marks = _get_json(f"{base}/jobs/{job['id']}/vertices/{vertex['id']}/watermarks")
                    values = [m["value"] for m in marks]
                    counts = vertex.get("metrics", {})
                    flow = f"in {counts.get('read-records')}, out {counts.get('write-records')}"
                    lines.append(f"{vertex['name'][:60]}: {values}; {flow}")
                    lines += self._operator_watermarks(base, job["id"], vertex["id"])
            counters = self.metric_totals(
                ["numLateRecordsDropped", "streamfolio.ticks_read", "streamfolio.ticks_counted"]
            )
            return "\n".join([*lines, f"counters: {dict(counters)}"])
        except (OSError, ValueError, KeyError) as exc:
            return f"(no watermarks: {exc})"

    @staticmethod
    def _operator_watermarks(base: str, job_id: str, vertex_id: str) -> list[str]:
        """Each operator's input (per input, for two inputs) and output watermarks by subtask:
        a task's own input watermark of two inputs is their minimum, idle or not."""
        url = f"{base}/jobs/{job_id}/vertices/{vertex_id}/metrics"
        ids = [
            m["id"]
            for m in _get_json(url)
            if m["id"].endswith(("Input1Watermark", "Input2Watermark", "OutputWatermark"))
        ]
        if not ids:
            return []
        values = _get_json(f"{url}?get={','.join(ids)}")
        return [f"    {m['id'][:90]} = {m['value']}" for m in sorted(values, key=str)]

    def metric_totals(self, names: Sequence[str]) -> Counter[str]:
        """The running job's metrics whose names end with one of ``names``, summed over every
        task (a metric of several operators, e.g. ``numLateRecordsDropped``, is summed too)."""
        base = f"http://127.0.0.1:{self.rest_port}"
        totals: Counter[str] = Counter()
        for job in _get_json(f"{base}/jobs")["jobs"]:
            if job["status"] != "RUNNING":
                continue
            for vertex in _get_json(f"{base}/jobs/{job['id']}")["vertices"]:
                url = f"{base}/jobs/{job['id']}/vertices/{vertex['id']}/subtasks/metrics"
                ids = [m["id"] for m in _get_json(url)]
                wanted = {i: n for i in ids for n in names if i.endswith(n)}
                if wanted:
                    query = ",".join(wanted)
                    for metric in _get_json(f"{url}?get={query}&agg=sum"):
                        totals[wanted[metric["id"]]] += int(float(metric["sum"]))
        return totals

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in text if "WARN" not in line)[-6000:] or "(empty)"

    def wait(self, timeout: float = JOB_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"job still running after {timeout} s: {self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the whole process group: the Python client and the MiniCluster JVM."""
        # The group may outlive its leader (a JVM left behind): kill it whatever the leader did.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._out.close()


def assert_matches_replay(outputs: Outputs, expected: dict[str, list[ReplayEvent]]) -> None:
    for kind, got in (("stats", outputs.stats), ("metrics", outputs.metrics)):
        want: dict[str, list[dict[str, Any]]] = {}
        for event in expected.get(kind, []):
            want.setdefault(event.key, []).append(dict(event.record))
        assert sorted(got) == sorted(want), kind
        for portfolio_id, records in want.items():
            flink = got[portfolio_id]
            assert [r["timestamp"] for r in flink] == [r["timestamp"] for r in records], (
                kind,
                portfolio_id,
            )
            for ours, theirs in zip(flink, records, strict=True):
                if kind == "stats":
                    _assert_stats_equal(ours, theirs)
                else:
                    _assert_metrics_equal(ours, theirs)


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def _assert_stats_equal(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """The same statistics, whichever layout each record has (``flink.stats_layout``)."""
    assert ours["kind"] == "updated"
    mine, want = PortfolioStats.from_record(ours), PortfolioStats.from_record(theirs)
    assert (mine.count, mine.estimator, mine.tickers) == (want.count, want.estimator, want.tickers)
    for t, a, b in zip(want.tickers, mine.mean, want.mean, strict=True):
        assert _close(a, b), (t, ours, theirs)
    for row, expected_row in zip(mine.covariance, want.covariance, strict=True):
        assert all(_close(a, b) for a, b in zip(row, expected_row, strict=True)), (ours, theirs)


def _assert_metrics_equal(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    for name in ("count", "statsTimestamp", "weights", "periodsPerYear", "riskFreeRate"):
        assert ours[name] == theirs[name], name
    for name in ("risk", "expectedReturn", "sharpRatio", "meanReturn", "variance"):
        assert _close(ours[name], theirs[name]), (name, ours[name], theirs[name])


def complete(outputs: Outputs, expected: dict[str, list[ReplayEvent]]) -> Callable[[], bool]:
    counts = Counter((e.kind, e.key) for kind in ("stats", "metrics") for e in expected[kind])

    def done() -> bool:
        have = Counter(
            {("stats", k): len(v) for k, v in outputs.stats.items()}
            | {("metrics", k): len(v) for k, v in outputs.metrics.items()}
        )
        return all(have[key] >= n for key, n in counts.items())

    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def assert_every_tick_accounted_for(job: JobProcess, produced: int) -> Counter[str]:
    """The running job's own counters: it read the ``produced`` non-heartbeat prices messages,
    each counted or dead-lettered, and the SQL windows dropped none. Waits out Flink's metric
    fetcher, whose figures may be 10 s old (``metrics.fetcher.update-interval``)."""
    names = [
        "streamfolio.ticks_read",
        "streamfolio.ticks_counted",
        "streamfolio.ticks_dead_lettered",
        "numLateRecordsDropped",
    ]
    deadline = time.monotonic() + 30.0
    totals = job.metric_totals(names)
    while totals["streamfolio.ticks_read"] < produced and time.monotonic() < deadline:
        time.sleep(1.0)
        totals = job.metric_totals(names)
    read = totals["streamfolio.ticks_read"]
    assert read == produced, totals
    assert read == totals["streamfolio.ticks_counted"] + totals["streamfolio.ticks_dead_lettered"]
    assert totals["numLateRecordsDropped"] == 0, totals
    return totals


def initial_stats(portfolio: Mapping[str, Any], timestamp: int, scale: float) -> dict[str, Any]:
    """A test portfolio's initial statistics (a prior of 50 observations), as a record."""
    n = len(portfolio["tickers"])
    mean = np.linspace(-2e-4, 3e-4, n) * scale
    cov = (np.full((n, n), 2e-5) + np.diag(np.linspace(1e-4, 3e-4, n))) * scale
    estimator = portfolio.get("estimator", {"kind": "welford"})
    moments = moments_from_prior(
        mean, cov, 50, kind=estimator["kind"], half_life_bars=estimator.get("half_life_bars")
    )
    record = stats_record(moments, portfolio["id"], portfolio["tickers"], timestamp)
    return record | {"kind": "initial"}


def arrival_order(ticks: Sequence[Tick], rng: np.random.Generator, bound_ms: int) -> list[Tick]:
    """Out of order within the bound: each tick arrives at its time + U[0, bound)."""
    arrival = np.array([t.event_time_ms for t in ticks]) + rng.uniform(0, bound_ms, len(ticks))
    return [ticks[i] for i in np.argsort(arrival, kind="stable")]


LOOP_TICKERS = ["AKT", "ATW", "BCP", "BOA", "IAM", "TGC"]


def loop_data(data: dict[str, Any], tmp: Path, name: str, *, cooldown_s: int) -> dict[str, Any]:
    """The closed loop's test configuration over a broker's configuration ``data``: topics and
    groups of their own, one portfolio ``loop`` of :data:`LOOP_TICKERS` on daily EW bars whose
    policy rebalances once its Sharpe ratio falls below 0.5 (then not again for ``cooldown_s``).
    """
    data = dict(data)
    token = uuid.uuid4().hex[:8]
    data["topics"] = {role: f"{name}-{role}-{token}" for role in data["topics"]}
    data["flink"] = {
        **data.get("flink", {}),
        "checkpoint_dir": str(tmp / "checkpoints"),
        "checkpoint_interval_ms": 2_000,
    }
    data["rebalancer"] = {"group_id": f"{name}-rebalancer-{token}"}
    data["feed"] = {**data.get("feed", {}), "spool_dir": str(tmp / "spool")}
    data["defaults"] = {
        **data.get("defaults", {}),
        "bar_seconds": 86_400,
        "estimator": {"kind": "ewm", "half_life_bars": 15},
    }
    data["portfolios"] = [
        {
            "id": "loop",
            "tickers": LOOP_TICKERS,
            "weights": {t: 1 / len(LOOP_TICKERS) for t in LOOP_TICKERS},
            "bounds": {"max": 0.4},
            "policy": {
                "sharpe_threshold": 0.5,
                "band": 0.1,
                "cooldown_seconds": cooldown_s,
                "min_improvement": 0.1,
                "max_turnover": 0.6,
                "min_observations": 5,
            },
        }
    ]
    return data


def loop_config(broker: Any, tmp: Path, name: str, *, cooldown_s: int) -> tuple[Settings, Path]:
    """:func:`loop_data` over ``broker``'s settings (tests/integration/test_loop.py,
    test_outage.py), written to ``tmp/<name>.yaml``, topics made."""
    base = yaml.safe_load(broker.config_path.read_text())
    data = loop_data(base, tmp, name, cooldown_s=cooldown_s)
    settings = settings_from_mapping(data)
    ensure_topics(broker.bootstrap, topic_specs(settings))
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return settings, path
