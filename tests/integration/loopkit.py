"""The closed loop under faults, shared by tests/integration/test_outage.py (a killed broker) and
test_cluster_loop.py (the secured broker cluster and the Flink cluster): simulated daily ticks,
the closed-loop replay they must equal, a feed gated on the rebalancer's weights, the components
as processes, and readers of what the topics hold.

The loop is timing-dependent in one place, by design (docs/flink.md, control messages): weights
read only after the next bar has closed take effect on arrival. So :class:`GatedFeed` does not
publish a bar after one at which the replay rebalances until the rebalancer's weights are on the
topic: every decision compared is then a function of the data alone, whatever a fault does to
the timing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from jobkit import LOOP_TICKERS

from streamfolio.config import Component, Settings
from streamfolio.core.returns import bar_index
from streamfolio.feeds.heartbeat import Heartbeats
from streamfolio.feeds.publish import TickPublisher
from streamfolio.feeds.run import FeedOptions, _simulated
from streamfolio.kafka.clients import DeadLetters, RecordConsumer, RecordProducer
from streamfolio.kafka.topics import contract
from streamfolio.portfolios import policy_settings, portfolio_spec
from streamfolio.replay import ReplayEvent, ReplayPortfolio, Tick, replay_topic_records
from streamfolio.serde import codec_for
from streamfolio.serde.heartbeat import is_heartbeat
from streamfolio.state import initial_state, publish_state

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "STREAMFOLIO_FLINK_PYTHON_MODE": "process"}
TICKERS = LOOP_TICKERS
DAY_MS = 86_400_000
DAYS = 150
TIMEOUT_S = float(os.environ.get("STREAMFOLIO_TEST_JOB_TIMEOUT", "240"))
DAYS_PER_S = 4.0


def start_ms(days: int = DAYS) -> int:
    """A UTC midnight far enough in the past that every tick is behind the wall clock."""
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    return today - (days + 30) * DAY_MS


def simulated_ticks(
    settings: Settings, start_ms: int, days: int = DAYS
) -> list[tuple[int, str, float]]:
    """The simulator's ticks for ``days`` days (ten days of simulated time per second of its
    clock, forty ticks a day; the banks sell off after thirty days)."""
    options = FeedOptions(
        source="sim",
        rate=400.0,
        speedup=864_000.0,
        calibration="history",
        drift=0.6,
        regime_change_after_s=3.0,
        crash=("ATW", "BCP", "BOA"),
        crash_drift=-4.0,
        start=dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.UTC).isoformat(),
        seed=5,
    )
    end = start_ms + days * DAY_MS
    return list(itertools.takewhile(lambda t: t[0] < end, _simulated(settings, options)))


def initial_controls(settings: Settings, start_ms: int) -> list[tuple[str, dict[str, Any]]]:
    state = initial_state(settings)
    for entry in state["portfolios"]:
        entry["stats"]["timestamp"] = entry["weights"]["timestamp"] = start_ms
    publish_state(settings, state)
    (entry,) = state["portfolios"]
    return [("stats", entry["stats"]), ("weights", entry["weights"])]


def closed_loop(
    settings: Settings,
    ticks: list[tuple[int, str, float]],
    controls: list[tuple[str, dict[str, Any]]],
) -> dict[str, list[dict[str, Any]]]:
    """The replay with the policy in the loop: what the live loop must produce."""
    (portfolio,) = settings.portfolios
    replayed = ReplayPortfolio(
        portfolio_spec(portfolio, settings.exchange),
        policy=policy_settings(portfolio, settings.exchange),
    )
    prices = {0: [Tick(t, ticker, price, offset=i) for i, (t, ticker, price) in enumerate(ticks)]}
    events: list[ReplayEvent] = replay_topic_records(
        [replayed],
        prices,
        controls,  # type: ignore[arg-type]
        max_out_of_orderness_ms=settings.flink.max_out_of_orderness_ms,
        max_future_skew_ms=settings.validation.max_future_skew_ms,
    )
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_kind.setdefault(event.kind, []).append(dict(event.record))
    return by_kind


class Process:
    """A ``streamfolio`` command in its own session, its output in ``<name>.log``."""

    def __init__(self, name: str, argv: list[str], tmp: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamfolio.cli", *argv],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def alive(self) -> bool:
        return self.process.poll() is None

    def group_gone(self) -> bool:
        """No process of its group is left (a JVM or a Python worker included)."""
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return True
        self.process.poll()
        return False

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float, check: Callable[[], None]
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        check()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# ------------------------------------------------------------------------------------ reading


class Topics:
    """Everything on the output and control topics so far (read_committed), decoded."""

    def __init__(self, settings: Settings, component: Component = "admin") -> None:
        self.settings = settings
        roles = ("updated_stats", "metrics", "weights", "rebalance_events", "dead_letter")
        self.consumer = RecordConsumer(
            settings.kafka,
            [contract(settings, r) for r in roles],
            component=component,
            group_id=f"outage-check-{uuid.uuid4().hex[:6]}",
            from_beginning=True,
            assign_all=True,
        )
        self.by_topic: dict[str, list[dict[str, Any]]] = {}

    def poll(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the broker away: try again later
                item = self.consumer.poll(0.1)
                if item is not None and item.record is not None:
                    self.by_topic.setdefault(item.topic, []).append(item.record)

    def records(self, role: str) -> list[dict[str, Any]]:
        """The role's records in the order read, each distinct record once: at-least-once
        output repeats what followed the last checkpoint, identically."""
        seen: set[str] = set()
        unique = []
        for record in self.by_topic.get(getattr(self.settings.topics, role), []):
            key = json.dumps(record, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                unique.append(record)
        return unique

    def close(self) -> None:
        self.consumer.close()


def prices_on_topic(settings: Settings) -> list[tuple[int, str, float]]:
    """Every tick on the prices topic, read to the end offsets it has now."""
    topic = settings.topics.prices
    consumer = Consumer(
        {
            **settings.kafka.client_config("admin"),
            "group.id": f"outage-prices-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    codec = codec_for("PriceTick")
    ticks = []
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            for p in partitions
        }
        assert all(low == 0 for low, _ in marks.values()), f"records deleted: {marks}"
        ends = {p: high for p, (_, high) in marks.items()}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        read = dict.fromkeys(partitions, 0)
        errors: set[str] = set()
        deadline = time.monotonic() + 120
        while any(read[p] < ends[p] for p in partitions):
            assert time.monotonic() < deadline, f"prices read {read} of {ends}; errors {errors}"
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                errors.add(str(message.error()))
                continue
            read[message.partition() or 0] = (message.offset() or 0) + 1
            value = message.value() or b""
            if not is_heartbeat(value):
                tick = codec.decode(value)
                ticks.append((tick["event_time"], tick["ticker"], tick["price"]))
    finally:
        consumer.close()
    return ticks


# ------------------------------------------------------------------------------------ the feed


class GatedFeed:
    """Publishes the ticks day by day, with a heartbeat round closing each day's bar, and
    holds the day after a rebalance until the rebalancer's weights for it are on the topic."""

    def __init__(
        self,
        settings: Settings,
        ticks: list[tuple[int, str, float]],
        component: Component = "admin",
    ) -> None:
        self.settings = settings
        self.days = [
            list(group) for _, group in itertools.groupby(ticks, lambda t: bar_index(t[0], DAY_MS))
        ]
        self.producer = RecordProducer(settings.kafka, component=component)
        prices = contract(settings, "prices")
        self.heartbeats = Heartbeats(self.producer, prices.name, interval_ms=1_000, source="sim")
        self.publisher = TickPublisher(
            self.producer,
            prices,
            DeadLetters(self.producer, contract(settings, "dead_letter"), "feed"),
            known_tickers=set(TICKERS),
            source="sim",
            heartbeats=self.heartbeats,
        )
        self.published_days = 0
        self.error: BaseException | None = None

    def run(
        self, gates: set[int], weights_seen: Callable[[int], bool], stop: threading.Event
    ) -> None:
        """A rebalance stamped T (the end of bar d) must take effect before bar d + 1 closes,
        i.e. before anything at or after the end of bar d + 1 is published: the ticks of the
        day after are held until its weights are on the topic."""
        try:
            ooo = self.settings.flink.max_out_of_orderness_ms
            for index, day in enumerate(self.days):
                day_index = bar_index(day[0][0], DAY_MS)
                for gate in sorted(g for g in gates if bar_index(g, DAY_MS) < day_index):
                    gates.discard(gate)
                    deadline = time.monotonic() + TIMEOUT_S
                    while not weights_seen(gate):
                        assert time.monotonic() < deadline, (
                            f"no weights for the rebalance at {gate}"
                        )
                        if stop.wait(0.2):
                            return
                for event_time, ticker, price in day:
                    self.publisher.publish(event_time, ticker, price)
                # Nothing older than the next tick follows (what the feed's horizon says).
                following = self.days[index + 1][0][0] if index + 1 < len(self.days) else None
                self.heartbeats.advance(following or day[-1][0] + DAY_MS + ooo)
                self.heartbeats.beat()
                self.published_days += 1
                if stop.wait(1.0 / DAYS_PER_S):
                    return
        except BaseException as exc:  # reported by the test
            self.error = exc


def assert_equal(got: list[dict[str, Any]], want: list[dict[str, Any]], what: str) -> None:
    assert len(got) == len(want), (what, len(got), len(want))
    for ours, theirs in zip(got, want, strict=True):
        for name, value in theirs.items():
            if name in ours:
                assert_close(ours[name], value, f"{what}.{name}")


def assert_close(ours: Any, theirs: Any, where: str) -> None:
    if isinstance(theirs, float) and isinstance(ours, float):
        assert abs(ours - theirs) <= 1e-12 + 1e-9 * max(abs(ours), abs(theirs)), where
    elif isinstance(theirs, dict) and isinstance(ours, dict):
        assert set(ours) == set(theirs), where
        for key, value in theirs.items():
            assert_close(ours[key], value, f"{where}.{key}")
    else:
        assert ours == theirs, (where, ours, theirs)


def wait_until_done(
    topics: Topics,
    expected: dict[str, list[dict[str, Any]]],
    store_db: Path,
    check: Callable[[], None],
) -> None:
    """Wait until every bar's statistics and metrics are on the topics and in the store.

    The store resumes from its committed offsets once it has rejoined its group. Its rows are
    keyed by portfolio and time: the metrics under the new weights replace those of the bar that
    decided them.
    """

    def complete() -> bool:
        return len(topics.records("metrics")) >= len(expected["metrics"]) and len(
            topics.records("updated_stats")
        ) >= len(expected["stats"])

    wait_for(complete, "every bar's results", TIMEOUT_S, check)

    def stored() -> int:
        try:
            with contextlib.closing(sqlite3.connect(store_db)) as db:
                return int(db.execute("select count(*) from metrics").fetchone()[0])
        except sqlite3.Error:  # not created yet, or busy: ask again
            return 0

    bars = len({m["timestamp"] for m in expected["metrics"]})
    wait_for(lambda: stored() >= bars, "the store", TIMEOUT_S, check)
    time.sleep(5)  # anything more (it must not come) and the rebalancer's last decisions
    topics.poll(2.0)


def assert_loop_equals_replay(
    topics: Topics,
    expected: dict[str, list[dict[str, Any]]],
    published: list[tuple[int, str, float]],
    on_topic: list[tuple[int, str, float]],
) -> None:
    """No tick missing, and the results equal the closed-loop replay's, bar for bar.

    A broker killed mid-delivery may keep a few ticks twice: idempotence holds within a producer
    id, and librdkafka resends what was in flight under a new one after the crash. A copy
    changes no close (same price, or late and dead-lettered).
    """
    found, sent = Counter(on_topic), Counter(published)
    assert not sent - found, f"missing: {list((sent - found).items())[:5]}"
    copies = found - sent
    assert set(copies) <= set(sent), f"not published: {list(copies)[:5]}"
    assert_equal(topics.records("updated_stats"), expected["stats"], "statistics")
    assert_equal(topics.records("metrics"), expected["metrics"], "metrics")
    rebalances = [e for e in topics.records("rebalance_events") if e["decision"] == "rebalance"]
    assert_equal(rebalances, expected["rebalance"], "rebalance events")
    new_weights = [w for w in topics.records("weights") if w["source"] == "rebalancer"]
    assert_equal(new_weights, expected["weights"], "weights")
    refused = [d for d in topics.records("dead_letter") if d["component"] == "job"]
    assert {d["reason"] for d in refused} <= {"late"} and len(refused) <= copies.total(), refused
