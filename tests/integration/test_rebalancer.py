"""The rebalancer service against a real broker (issue "Close the loop").

Each test gets topics of its own on the session broker and plays the streaming job itself: it
publishes the weights the portfolios start with, then updated statistics and metrics records as
the job would. Portfolios ``p0``, ``p1``, ``p2``... hold ``AAA`` and ``BBB``; their statistics and
metrics go to partition ``index % 3`` of both topics (co-partitioned, as the job keys them).
With ``GOOD`` statistics AAA is a winner and BBB a loser, so the starting weights (mostly BBB)
are far below the Sharpe threshold 1.0 and the optimum is as much AAA as the bound 0.8 allows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
import yaml
from confluent_kafka import Producer
from typer.testing import CliRunner

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.metrics import portfolio_performance
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import ConsumedRecord, RecordConsumer
from streamfolio.kafka.topics import Role, contract
from streamfolio.messages import PortfolioMetrics, PortfolioStats, Weights
from streamfolio.rebalancer.cli import rebalancer_command
from streamfolio.rebalancer.notify import Notification, Notifier
from streamfolio.rebalancer.service import RebalancerError, RebalancerService, _AbortableError
from streamfolio.serde import codec_for

KafkaBroker = Any  # tests/integration/conftest.py: the session broker fixture

pytestmark = pytest.mark.integration

TICKERS = ("AAA", "BBB")
Q = 252.0
COV = np.eye(2) * 1e-4
GOOD = (0.001, -0.0002)  # AAA alone: Sharpe 1.59
WORSE = (0.0002, 0.0001)  # AAA 0.8 / BBB 0.2: Sharpe 0.30, below the threshold again
W0 = {"AAA": 0.2, "BBB": 0.8}  # Sharpe 0.08 under GOOD
T1 = 1_790_845_200_000  # 2026-10-01 09:00 UTC
MINUTE = 60_000
COOLDOWN_MINUTES = 10
PARTITIONS = 3


# ------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class Sandbox:
    settings: Settings
    config_path: Path


def _portfolio(pid: str, notify: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "id": pid,
        "owner": "ana",
        "tickers": list(TICKERS),
        "weights": W0,
        "periods_per_year": Q,
        "risk_free_rate": 0.0,
        "gamma": 0.0,
        "bounds": {"max": 0.8},
        "notify": list(notify),
        "policy": {
            "sharpe_threshold": 1.0,
            "band": 0.1,
            "cooldown_seconds": COOLDOWN_MINUTES * 60,
            "min_improvement": 0.05,
            "max_turnover": 1.0,
            "min_observations": 20,
        },
    }


def _sandbox(
    broker: KafkaBroker, tmp_path: Path, count: int, notify: Sequence[str] = ()
) -> Sandbox:
    data = yaml.safe_load(broker.config_path.read_text())
    token = uuid.uuid4().hex[:8]
    data["topics"] = {
        role: f"{name.rsplit('-', 1)[0]}-{token}" for role, name in data["topics"].items()
    }
    data.pop("defaults", None)
    data["portfolios"] = [_portfolio(f"p{i}", notify) for i in range(count)]
    settings = settings_from_mapping(data)
    assert settings.kafka.partitions == PARTITIONS
    ensure_topics(broker.bootstrap, topic_specs(settings))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "streamfolio.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Sandbox(settings, path)


def partition_of(pid: str) -> int:
    return int(pid.lstrip("pz")) % PARTITIONS


class Job:
    """Publishes what the streaming job would: statistics and metrics, co-partitioned."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(settings.kafka.client_config("admin"))

    def send(self, role: Role, record: Mapping[str, Any], partition: int | None = None) -> None:
        target = contract(self.settings, role)
        value = codec_for(target.schema).encode(record)
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        self.producer.produce(target.name, key=target.key_of(dict(record)), value=value, **extra)

    def send_raw(self, role: Role, key: bytes, value: bytes, partition: int) -> None:
        self.producer.produce(
            contract(self.settings, role).name, key=key, value=value, partition=partition
        )

    def initial_weights(self, pid: str) -> None:
        self.send(
            "weights", Weights(pid, T1 - MINUTE, W0, reason="initial", source="config").to_record()
        )

    def bar(
        self,
        pid: str,
        ts: int,
        weights: Mapping[str, float],
        mean: Sequence[float] = GOOD,
        *,
        metrics_first: bool = False,
    ) -> None:
        """Statistics stamped ``ts`` and the metrics of ``weights`` under them."""
        stats = self.stats(pid, ts, mean)
        pair: list[tuple[Role, dict[str, Any]]] = [
            ("updated_stats", stats.to_record()),
            ("metrics", self.metrics(stats, weights).to_record()),
        ]
        for role, record in reversed(pair) if metrics_first else pair:
            self.send(role, record, partition_of(pid))

    @staticmethod
    def stats(
        pid: str, ts: int, mean: Sequence[float] = GOOD, kind: str = "updated"
    ) -> PortfolioStats:
        return PortfolioStats.from_arrays(pid, ts, TICKERS, mean, COV, count=100, kind=kind)

    @staticmethod
    def metrics(stats: PortfolioStats, weights: Mapping[str, float]) -> PortfolioMetrics:
        w = np.array([weights[t] for t in TICKERS])
        perf = portfolio_performance(w, stats.mean_vector(), COV, periods_per_year=Q)
        return PortfolioMetrics(
            stats.portfolio_id,
            risk=perf.risk,
            expected_return=perf.expected_return,
            sharpe_ratio=perf.sharpe,
            timestamp=stats.timestamp,
            count=stats.count,
            weights=dict(weights),
            stats_timestamp=stats.timestamp,
        )

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def read_all(
    settings: Settings,
    role: Role,
    until: Callable[[list[ConsumedRecord]], bool] = lambda _: True,
    timeout: float = 30.0,
    settle: float = 1.0,
) -> list[ConsumedRecord]:
    """Every committed record of a topic: until ``until`` holds (or ``timeout``), then
    ``settle`` seconds more, to catch anything beyond what was expected."""
    items: list[ConsumedRecord] = []
    with RecordConsumer(
        settings.kafka,
        [contract(settings, role)],
        component="admin",
        group_id=f"t-{uuid.uuid4().hex}",
        from_beginning=True,
        assign_all=True,
    ) as consumer:
        deadline = time.monotonic() + timeout
        while not until(items) and time.monotonic() < deadline:
            item = consumer.poll(0.2)
            if item is not None:
                items.append(item)
        items.extend(consumer.records(timeout=settle))
    return items


def records(items: list[ConsumedRecord]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        assert item.record is not None, item.error
        out.append(item.record)
    return out


def at_least(n: int) -> Callable[[list[ConsumedRecord]], bool]:
    return lambda items: len(items) >= n


@dataclass
class Running:
    service: RebalancerService
    lines: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def wait_assigned(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.service.assigned_partitions:
            assert time.monotonic() < deadline, f"never assigned: {self.lines}"
            assert not self.errors, self.errors
            time.sleep(0.1)


@contextmanager
def running(
    settings: Settings,
    *,
    may_fail: bool = False,
    cls: type[RebalancerService] = RebalancerService,
    **options: Any,
) -> Iterator[Running]:
    """A :class:`RebalancerService` running on a thread until the block ends (or it fails:
    then the test fails too, unless ``may_fail``)."""
    lines: list[str] = []
    service = cls(
        settings, progress=lines.append, status_interval_s=5.0, from_beginning=True, **options
    )
    handle = Running(service, lines)
    stop = threading.Event()

    def target() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # surfaced by the test below
            handle.errors.append(exc)

    thread = threading.Thread(target=target, name=f"rebalancer-{service.instance}")
    thread.start()
    try:
        yield handle
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the service did not stop"
    assert may_fail or not handle.errors, handle.errors


@dataclass
class Webhook:
    url: str
    bodies: list[dict[str, Any]]


@contextmanager
def webhook() -> Iterator[Webhook]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Webhook(f"json://localhost:{server.server_address[1]}/owner", bodies)
    finally:
        server.shutdown()
        server.server_close()


def rebalancer_weights(settings: Settings, expected: int) -> list[dict[str, Any]]:
    """The weights the rebalancer published: at least ``expected``, and any beyond."""

    def enough(items: list[ConsumedRecord]) -> bool:
        return sum(1 for r in records(items) if r["source"] == "rebalancer") >= expected

    items = read_all(settings, "weights", enough)
    return [r for r in records(items) if r["source"] == "rebalancer"]


# -------------------------------------------------------------------------------------- tests


def test_a_breach_rebalances_once_and_a_restart_remembers(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    with webhook() as hook:
        box = _sandbox(kafka_broker, tmp_path, count=1, notify=[hook.url])
        settings = box.settings
        job = Job(settings)
        job.initial_weights("p0")
        # The metrics arrive before the statistics they name: the service waits for them.
        job.bar("p0", T1, W0, metrics_first=True)
        # Bad input on the way: undecodable bytes, an unknown portfolio, statistics that do not
        # fit the portfolio. Each is dead-lettered and the service carries on.
        job.send_raw("metrics", b"p0", b"\x00garbage", partition=0)
        job.bar("zz0", T1, W0)
        job.send(
            "updated_stats",
            PortfolioStats.from_arrays("p0", T1 - 1, ["AAA", "CCC"], [0.0, 0.0], COV).to_record(),
            partition=0,
        )
        job.flush()

        with running(settings, group_id="g1", instance="a") as run:
            events = records(read_all(settings, "rebalance_events", at_least(1)))
            (event,) = events
            assert event["decision"] == "rebalance" and event["event_id"] == f"p0@{T1}"
            assert event["timestamp"] == T1 and event["old_weights"] == W0
            assert event["sharpe_before"] < 1.0 < event["sharpe_after"]
            (published,) = rebalancer_weights(settings, 1)
            w1 = published["weights"]
            assert published["timestamp"] == T1 and published["portfolio_id"] == "p0"
            assert list(w1) == list(TICKERS)
            assert sum(w1.values()) == pytest.approx(1.0, abs=1e-9)
            assert all(0.0 <= w <= 0.8 + 1e-12 for w in w1.values()), "long-only, within bounds"
            assert w1 == event["new_weights"] and w1["AAA"] == pytest.approx(0.8)

            dead = records(read_all(settings, "dead_letter", at_least(4)))
            assert sorted(d["reason"] for d in dead) == [
                "invalid_stats",
                "undecodable",
                "unknown_portfolio",  # its statistics
                "unknown_portfolio",  # and its metrics
            ]
            assert {d["component"] for d in dead} == {"rebalancer"}
            assert any(d["payload"] == b"\x00garbage" for d in dead)

            # No thrashing. A bar later the job has not applied the new weights yet: stale.
            job.bar("p0", T1 + MINUTE, W0)
            # Then it has, and the Sharpe drops below the threshold again within the cool-down:
            # the policy re-arms (an audit event) but does not trade.
            job.bar("p0", T1 + 2 * MINUTE, w1, WORSE)
            job.flush()
            events = records(read_all(settings, "rebalance_events", at_least(2)))
            assert [e["decision"] for e in events] == ["rebalance", "rearm"]
            assert len(rebalancer_weights(settings, 1)) == 1
            deadline = time.monotonic() + 10
            while run.service.stats.counts["stale"] < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert run.service.stats.counts["stale"] == 1

            # The owner heard of the rebalance (after it committed), once.
            deadline = time.monotonic() + 15
            while not hook.bodies and time.monotonic() < deadline:
                time.sleep(0.1)
            (note,) = hook.bodies
            assert "p0" in note["title"] and event["reason"] in note["message"]
            assert "New weights: AAA 80.00 %, BBB 20.00 %" in note["message"]

        # Restart in the same group: committed input is not read again, and the rebuilt memory
        # still knows the cool-down (a bar 5 minutes after the rebalance does not trade).
        with running(settings, group_id="g1", instance="a") as run:
            run.wait_assigned()
            job.bar("p0", T1 + 5 * MINUTE, w1, WORSE)
            job.flush()
            deadline = time.monotonic() + 15
            while run.service.stats.counts["metrics"] < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
            assert run.service.stats.counts["metrics"] == 1, "only the new metrics record"
            assert run.service.stats.counts["rebalance"] == 0
        assert len(records(read_all(settings, "rebalance_events", at_least(2)))) == 2

        # A new group reads every metrics record again: the memory says they were decided.
        with running(settings, group_id="g2", instance="a") as run:
            run.wait_assigned()
            counts = run.service.stats.counts
            deadline = time.monotonic() + 15
            while counts["already_decided"] + counts["unchanged"] < 4:
                assert time.monotonic() < deadline, counts
                time.sleep(0.1)
            # The rebalance, the stale bar and the re-arm: at or before the last decision.
            assert counts["already_decided"] == 3
            assert counts["unchanged"] == 1, "the bar at +5 min: still cooling down"
            assert counts["rebalance"] == counts["rearm"] == counts["stale"] == 0
            # After the cool-down the policy tries again; nothing within the bounds gains the
            # minimum improvement under these statistics, so it holds and tells the owner.
            job.bar("p0", T1 + (COOLDOWN_MINUTES + 1) * MINUTE, w1, WORSE)
            job.flush()
            events = records(read_all(settings, "rebalance_events", at_least(3)))
        assert [e["decision"] for e in events] == ["rebalance", "rearm", "hold"]
        hold = events[2]
        assert hold["new_weights"] == hold["old_weights"] == w1 and hold["turnover"] == 0.0
        assert "below the minimum" in hold["reason"]
        assert len(rebalancer_weights(settings, 1)) == 1
        deadline = time.monotonic() + 15
        while len(hook.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [b["type"] for b in hook.bodies] == ["info", "warning"]
        assert "below its threshold 1.00" in hook.bodies[1]["message"]


def test_two_instances_share_the_portfolios_without_duplicates(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    box = _sandbox(kafka_broker, tmp_path, count=3)
    settings = box.settings
    job = Job(settings)
    for i in range(3):
        job.initial_weights(f"p{i}")
    job.flush()
    with running(settings, group_id="shared", instance="a") as a:
        a.wait_assigned()
        with running(settings, group_id="shared", instance="b") as b:
            b.wait_assigned()
            deadline = time.monotonic() + 30
            while len(a.service.assigned_partitions) + len(b.service.assigned_partitions) != 6:
                assert time.monotonic() < deadline, (a.lines, b.lines)
                time.sleep(0.1)
            mine = {t_p[1] for t_p in a.service.assigned_partitions}
            theirs = {t_p[1] for t_p in b.service.assigned_partitions}
            assert mine and theirs and not mine & theirs, "range: whole partitions, both topics"

            for i in range(3):
                job.bar(f"p{i}", T1, W0)
            job.flush()
            events = records(read_all(settings, "rebalance_events", at_least(3), settle=2.0))
            decided = {
                "a": a.service.stats.counts["rebalance"],
                "b": b.service.stats.counts["rebalance"],
            }
    assert sorted(e["event_id"] for e in events) == [f"p{i}@{T1}" for i in range(3)]
    assert len(rebalancer_weights(settings, 3)) == 3
    assert decided["a"] + decided["b"] == 3 and min(decided.values()) >= 1, decided


def test_an_instance_started_twice_under_one_name_fences_the_older_one(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    box = _sandbox(kafka_broker, tmp_path, count=3)
    settings = box.settings
    job = Job(settings)
    for i in range(3):
        job.initial_weights(f"p{i}")
    job.flush()
    with running(settings, group_id="twice", instance="same", may_fail=True) as old:
        old.wait_assigned()
        with running(settings, group_id="twice", instance="same") as new:
            new.wait_assigned()  # its producer took over the transactional id
            for i in range(3):
                job.bar(f"p{i}", T1, W0)
            job.flush()
            deadline = time.monotonic() + 30
            while not old.errors:
                assert time.monotonic() < deadline, old.lines
                time.sleep(0.1)
            # The old one left the group: the new one decides for every portfolio.
            events = records(read_all(settings, "rebalance_events", at_least(3), settle=2.0))
    (error,) = old.errors
    assert isinstance(error, RebalancerError)
    assert "give each instance its own --instance" in str(error)
    assert sorted(e["event_id"] for e in events) == [f"p{i}@{T1}" for i in range(3)]
    assert old.service.stats.counts["rebalance"] == 0


class FailsFirstCommit(RebalancerService):
    """Its first transaction holding a decision fails as if the broker had said "abort"."""

    failed = False

    def _commit(self) -> None:
        if self._staged_events and not self.failed:
            FailsFirstCommit.failed = True
            raise _AbortableError("injected: transaction must be aborted")
        super()._commit()


def test_an_aborted_transaction_is_redone_and_announced_once(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    box = _sandbox(kafka_broker, tmp_path, count=1, notify=["json://localhost:9/unused"])
    job = Job(box.settings)
    job.initial_weights("p0")
    job.bar("p0", T1, W0)
    job.flush()
    told: list[Notification] = []

    def tell(note: Notification) -> bool:
        told.append(note)
        return True

    with running(
        box.settings, group_id="g", instance="a", cls=FailsFirstCommit, notifier=Notifier(send=tell)
    ) as run:
        events = records(read_all(box.settings, "rebalance_events", at_least(1), settle=2.0))
        stats = run.service.stats
    assert FailsFirstCommit.failed and stats.aborted == 1
    assert [e["event_id"] for e in events] == [f"p0@{T1}"], "the aborted one stays invisible"
    assert len(rebalancer_weights(box.settings, 1)) == 1
    assert stats.counts["rebalance"] == 1, "counted once: when it committed"
    assert [n.event_id for n in told] == [f"p0@{T1}"], "announced once, after the commit"


def test_metrics_of_a_seed_and_statistics_that_never_come(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    box = _sandbox(kafka_broker, tmp_path, count=2)
    settings = box.settings
    job = Job(settings)
    for pid in ("p0", "p1"):
        job.initial_weights(pid)
    # p0: the job was seeded with initial statistics and emitted metrics naming them, stamped
    # as the job stamps them: the later of the statistics' and the weights' times.
    seed = Job.stats("p0", T1 - 30 * MINUTE, kind="initial")
    job.send("initial_stats", seed.to_record())
    seeded = replace(Job.metrics(seed, W0), timestamp=T1 - MINUTE)
    job.send("metrics", seeded.to_record(), partition_of("p0"))
    # p1: metrics naming statistics that never arrive; later ones do, then their metrics.
    lost = Job.metrics(Job.stats("p1", T1), W0)
    job.send("metrics", lost.to_record(), partition_of("p1"))
    job.flush()
    with running(settings, group_id="g", instance="a"):
        job.bar("p1", T1 + MINUTE, W0)
        job.flush()
        events = records(read_all(settings, "rebalance_events", at_least(2)))
        dead = records(read_all(settings, "dead_letter", at_least(1)))
    assert sorted((e["event_id"], e["decision"]) for e in events) == [
        (f"p0@{T1 - MINUTE}", "rebalance"),
        (f"p1@{T1 + MINUTE}", "rebalance"),
    ]
    (missing,) = dead
    assert missing["reason"] == "stats_missing" and missing["key"] == b"p1"
    assert str(T1) in missing["detail"]


def _start_cli(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamfolio.rebalancer.cli",
            "--config",
            str(config),
            "--group-id",
            "crashy",
            "--instance",
            "one",
            "--from-beginning",
            "--status-interval",
            "1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_a_kill_9_mid_run_then_a_restart_publishes_each_decision_once(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    count = 24
    box = _sandbox(kafka_broker, tmp_path, count=count)
    job = Job(box.settings)
    for i in range(count):
        job.initial_weights(f"p{i}")
    job.flush()

    first = _start_cli(box.config_path)
    assert first.stdout is not None
    lines: list[str] = []
    try:
        for line in first.stdout:  # wait until it reads, then feed it a trickle
            lines.append(line)
            if "assigned" in line:
                break
        for i in range(count):
            job.bar(f"p{i}", T1, W0)
            job.flush()
            time.sleep(0.05)
            if i == count // 3:
                # Decisions are being made: kill it where it stands, transaction or not.
                first.kill()
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(30)
        lines.extend(first.stdout)  # what it said before it died
        first.stdout.close()
    assert first.returncode == -signal.SIGKILL
    killed_after = sum(": rebalance at" in line for line in lines)

    second = _start_cli(box.config_path)
    try:
        events = records(
            read_all(box.settings, "rebalance_events", at_least(count), timeout=60, settle=2.0)
        )
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output
    assert "SIGTERM: finishing the current transaction" in output
    assert "rebalancer one stopped:" in output
    decided_again = output.count(": rebalance at")
    # The restart decides what the first run had not committed (decisions of the killed
    # transaction are made again, with the same content), never what it had.
    assert 0 < decided_again <= count - killed_after, (killed_after, decided_again)
    print(f"killed after {killed_after} committed decisions; {decided_again} made after restart")

    ids = [e["event_id"] for e in events]
    assert len(ids) == count and sorted(set(ids)) == sorted(f"p{i}@{T1}" for i in range(count))
    assert {e["decision"] for e in events} == {"rebalance"}
    weights = rebalancer_weights(box.settings, count)
    assert sorted(w["portfolio_id"] for w in weights) == sorted(f"p{i}" for i in range(count))


def test_the_command_runs_for_a_duration_and_reports_what_it_did(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    box = _sandbox(kafka_broker, tmp_path, count=1)
    job = Job(box.settings)
    job.initial_weights("p0")
    job.bar("p0", T1, W0)
    job.flush()
    app = typer.Typer()
    app.command()(rebalancer_command)
    args = ["-c", str(box.config_path), "--group-id", "cli", "--instance", "c"]
    result = CliRunner().invoke(app, [*args, "--from-beginning", "--duration", "6"])
    assert result.exit_code == 0, result.output
    assert f"p0: rebalance at {T1} (sharpe 0.08 below threshold 1.00)" in result.output
    assert "rebalancer c stopped: 1 metrics and 1 statistics read; 1 rebalance(s)" in result.output
    assert len(records(read_all(box.settings, "rebalance_events", at_least(1)))) == 1

    bad = CliRunner().invoke(app, ["-c", str(tmp_path / "missing.yaml"), "--duration", "1"])
    assert bad.exit_code == 2 and "error:" in bad.output
