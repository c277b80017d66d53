"""The Python services follow the portfolios topic while they run (issue #15): a portfolio
defined on the topic is decided by the rebalancer with its own threshold, its definition is
stored, and the dashboard lists it; after its removal its later metrics are not decided and the
dashboard drops it.

Needs the session broker (tests/integration/conftest.py); the job is played by hand-made
statistics and metrics."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.metrics import portfolio_performance
from streamfolio.dashboard.consumer import DashboardConsumer
from streamfolio.dashboard.state import DashboardState
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import RecordProducer
from streamfolio.kafka.definitions import publish_definition, publish_removal
from streamfolio.kafka.topics import Role, contract
from streamfolio.messages import PortfolioMetrics, PortfolioStats, Weights
from streamfolio.portfolios import definition_of, portfolios_from_entries
from streamfolio.rebalancer.service import RebalancerService
from streamfolio.store import schema
from streamfolio.store.schema import open_store
from streamfolio.store.service import StoreOptions, StoreService

KafkaBroker = Any

pytestmark = pytest.mark.integration

TICKERS = ("AAA", "BBB")
Q = 252.0
COV = np.eye(2) * 1e-4
GOOD = (0.001, -0.0002)  # W0 has Sharpe 0.077 a year: above 0.05, below the default 0.3
BAD = (0.0001, -0.0002)  # W0 has a negative Sharpe: below anything
W0 = {"AAA": 0.2, "BBB": 0.8}
T1 = 1_790_845_200_000
MINUTE = 60_000


def _entry(pid: str, threshold: float) -> dict[str, Any]:
    return {
        "id": pid,
        "tickers": list(TICKERS),
        "weights": W0,
        "periods_per_year": Q,
        "risk_free_rate": 0.0,
        "gamma": 0.0,
        "policy": {"sharpe_threshold": threshold, "min_observations": 20, "band": 0.1},
    }


def _sandbox(broker: KafkaBroker) -> Settings:
    data = yaml.safe_load(broker.config_path.read_text())
    token = uuid.uuid4().hex[:8]
    data["topics"] = {
        role: f"{name.rsplit('-', 1)[0]}-{token}" for role, name in data["topics"].items()
    }
    data.pop("defaults", None)
    data.setdefault("exchange", {})["universe"] = list(TICKERS)
    data["portfolios"] = [_entry("p0", 1.0)]
    settings = settings_from_mapping(data)
    ensure_topics(broker.bootstrap, topic_specs(settings))
    return settings


class Pipeline:
    """Publishes what `portfolio add` and the streaming job would."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = RecordProducer(settings.kafka, component="admin")

    def send(self, role: Role, record: Mapping[str, Any], ts: int) -> None:
        self.producer.send(contract(self.settings, role), dict(record), timestamp_ms=ts)

    def bar(self, pid: str, ts: int, mean: Sequence[float]) -> None:
        stats = PortfolioStats.from_arrays(pid, ts, TICKERS, mean, COV, count=100, kind="updated")
        w = np.array([W0[t] for t in TICKERS])
        perf = portfolio_performance(w, stats.mean_vector(), COV, periods_per_year=Q)
        metrics = PortfolioMetrics(
            pid,
            risk=perf.risk,
            expected_return=perf.expected_return,
            sharpe_ratio=perf.sharpe,
            timestamp=ts,
            count=100,
            weights=W0,
            stats_timestamp=ts,
        )
        self.send("updated_stats", stats.to_record(), ts)
        self.send("metrics", metrics.to_record(), ts)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


@contextmanager
def on_thread(run: Callable[[threading.Event], Any], name: str) -> Iterator[list[BaseException]]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=name)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), f"{name} did not stop"
    assert not errors, errors


def wait_for(what: Callable[[], bool], why: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.1)


def test_the_services_follow_a_portfolio_added_and_removed_at_run_time(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    settings = _sandbox(kafka_broker)
    database = f"sqlite:///{tmp_path}/history.db"
    rebalancer = RebalancerService(settings, progress=lambda _: None, status_interval_s=60.0)
    state = DashboardState.from_settings(settings)
    dashboard = DashboardConsumer(settings, state)
    dashboard.start()

    def run_store(stop: threading.Event) -> None:
        StoreService(settings, StoreOptions(database=database, batch_seconds=0.2), stop=stop).run()

    pipeline = Pipeline(settings)
    try:
        with (
            on_thread(lambda stop: rebalancer.run(stop), "rebalancer"),
            on_thread(run_store, "store"),
        ):
            (added,) = portfolios_from_entries([_entry("new", 0.05)], settings)
            publish_definition(pipeline.producer, settings, definition_of(added, T1 - 2 * MINUTE))
            initial = Weights("new", T1 - MINUTE, W0, reason="initial", source="config")
            pipeline.send("weights", initial.to_record(), T1 - MINUTE)
            pipeline.bar("new", T1, GOOD)  # above its 0.05: nothing to do
            pipeline.bar("new", T1 + MINUTE, BAD)  # below: rebalanced
            pipeline.flush()
            wait_for(lambda: state.knows("new"), "the dashboard never listed the new portfolio")
            listed = {s["id"]: s for s in state.summaries()}
            assert listed["new"]["tickers"] == list(TICKERS)
            wait_for(
                lambda: rebalancer.stats.counts["rebalance"] >= 1,
                f"no decision on the new portfolio: {rebalancer.stats.line()}",
            )
            counts = rebalancer.stats.counts
            assert counts["unchanged"] == 1 and counts["rebalance"] == 1, rebalancer.stats.line()
            assert not rebalancer.stats.dead_letters, rebalancer.stats.line()

            publish_removal(pipeline.producer, settings, "new", T1 + 5 * MINUTE)
            pipeline.flush()
            pipeline.bar("new", T1 + 10 * MINUTE, BAD)
            pipeline.flush()
            wait_for(
                lambda: rebalancer.stats.counts["removed"] >= 1,
                f"the removed portfolio's metrics were not counted: {rebalancer.stats.line()}",
            )
            assert rebalancer.stats.counts["rebalance"] == 1
            wait_for(lambda: not state.knows("new"), "the dashboard still lists it")
            engine = open_store(database, create=False)
            table = schema.portfolio_definitions

            def definitions() -> list[tuple[str, int, bool]]:
                with engine.connect() as connection:
                    rows = connection.execute(
                        sa.select(table.c.portfolio_id, table.c.timestamp_ms, table.c.definition)
                    )
                    return sorted((pid, t, d is not None) for pid, t, d in rows)

            wait_for(lambda: len(definitions()) == 2, "the store kept no definitions")
            assert definitions() == [
                ("new", T1 - 2 * MINUTE, True),
                ("new", T1 + 5 * MINUTE, False),
            ]
            with engine.connect() as connection:
                stored = connection.execute(
                    sa.select(sa.func.count())
                    .select_from(schema.metrics)
                    .where(schema.metrics.c.portfolio_id == "new")
                ).scalar_one()
            assert stored == 3  # its metrics, the one after its removal too (history)
            engine.dispose()
    finally:
        dashboard.stop()
