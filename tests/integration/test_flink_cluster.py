"""The job on a Flink cluster of separate processes (#14 part 3), checked against the replay.

``LocalFlinkCluster`` (what ``streamfolio flink up`` runs): one JobManager and two TaskManagers
of one slot each, separate JVMs, on free ports with a data folder of their own: the session's
``flink_session_cluster`` (tests/integration/conftest.py), shared with test_cluster_loop.py,
idle again before this test (a job left cancelled, every slot free), stopped by it. The job is
submitted with ``flink run`` (parallelism 2, exactly-once, the tests' process mode) and must run
on both TaskManagers. Two portfolios sharing four tickers, in three phases, each closed by
heartbeats on every partition:

1. the opening (initial statistics, weights, the first third of the ticks): results arrive;
2. the second third's results arrive (a TaskManager killed mid-run, the job restarting from
   its checkpoint on a new one, is tests/integration/test_cluster_loop.py's);
3. stop with a savepoint; the last third produced while no job runs; the job submitted again
   from the savepoint: every bar's results arrive.

A ``read_committed`` reader must then see every bar's statistics and metrics exactly once, equal
to the replay of everything produced; and ``down`` must leave no process of the cluster behind
(the Python workers included).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from jobkit import (
    FLINK_TEST_ENV,
    JOB_TIMEOUT,
    Message,
    Outputs,
    arrival_order,
    assert_matches_replay,
    complete,
    heartbeats,
    initial_stats,
    produce,
    run_settings,
)

from streamfolio.config import Settings
from streamfolio.feeds.simulate import Regime, simulate_ticks
from streamfolio.flink.cluster import LocalFlinkCluster
from streamfolio.portfolios import portfolio_spec
from streamfolio.replay import (
    Heartbeat,
    PriceRecord,
    ReplayEvent,
    ReplayPortfolio,
    Tick,
    replay_topic_records,
)
from streamfolio.serde import codec_for

if TYPE_CHECKING:
    from conftest import KafkaBroker, SharedFlinkCluster  # tests/integration/conftest.py

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("flink_jars")]

START = 1_750_000_000_000
N_BARS = 60
BOUND_MS = 1_000
PHASE_ENDS = [START + 20_000, START + 40_000, START + (N_BARS + 5) * 1_000]
"""Each phase's ticks are before its end, its heartbeats at it; the last makes every bar final."""
TICKERS = ("AAA", "BBB", "CCC", "DDD")
PARTITION_OF = {"AAA": 0, "BBB": 1, "CCC": 2, "DDD": 0}
PORTFOLIOS: list[dict[str, Any]] = [
    {
        "id": "p1",
        "tickers": ["AAA", "BBB", "CCC"],
        "weights": {"AAA": 0.4, "BBB": 0.35, "CCC": 0.25},
        "bar_seconds": 1,
        "periods_per_year": 1000,
    },
    {
        "id": "p2",
        "tickers": ["BBB", "CCC", "DDD"],
        "weights": {"BBB": 0.2, "CCC": 0.3, "DDD": 0.5},
        "bar_seconds": 2,
        "periods_per_year": 500,
        "estimator": {"kind": "ewm", "half_life_bars": 20},
    },
]


class Scenario:
    """The messages of the three phases, and the replay's input: every prices message goes to
    a known partition, so each partition's records are known in offset order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prices: dict[int, list[PriceRecord]] = {
            p: [] for p in range(settings.kafka.partitions)
        }
        self.controls: list[tuple[Any, dict[str, Any]]] = []
        self.phases: list[list[Message]] = [[] for _ in PHASE_ENDS]
        rng = np.random.default_rng(3)
        for portfolio in PORTFOLIOS:
            stats = initial_stats(portfolio, START, 1.0)
            weights = {"timestamp": START, "portfolio_id": portfolio["id"]}
            weights["weights"] = portfolio["weights"]
            self.phases[0].append(self._control("stats", "PortfolioStats", stats))
            self.phases[0].append(self._control("weights", "Weights", weights))
        ticks = _ticks()
        begin = START
        for phase, end in zip(self.phases, PHASE_ENDS, strict=True):
            chunk = [t for t in ticks if begin <= t.event_time_ms < end]
            phase.extend(self._tick(t) for t in arrival_order(chunk, rng, BOUND_MS))
            phase.extend(self._heartbeats(end))
            begin = end

    def _control(self, kind: str, schema: str, record: dict[str, Any]) -> Message:
        self.controls.append((kind, record))
        role = "initial_stats" if kind == "stats" else "weights"
        key = str(record["portfolio_id"]).encode()
        return Message(role, codec_for(schema).encode(record), key, int(record["timestamp"]))

    def _tick(self, tick: Tick) -> Message:
        partition = PARTITION_OF[tick.ticker]
        offset = len(self.prices[partition])
        self.prices[partition].append(
            Tick(tick.event_time_ms, tick.ticker, tick.price, partition, offset)
        )
        value = codec_for("PriceTick").encode(
            {"ticker": tick.ticker, "price": tick.price, "event_time": tick.event_time_ms}
        )
        return Message("prices", value, tick.ticker.encode(), tick.event_time_ms, partition)

    def _heartbeats(self, time_ms: int) -> list[Message]:
        messages = heartbeats(self.settings, time_ms)
        for m in messages:
            assert m.partition is not None
            offset = len(self.prices[m.partition])
            self.prices[m.partition].append(Heartbeat(time_ms, m.partition, offset))
        return messages

    def expected(self) -> dict[str, list[ReplayEvent]]:
        specs = [portfolio_spec(p, self.settings.exchange) for p in self.settings.portfolios]
        events = replay_topic_records(
            [ReplayPortfolio(spec) for spec in specs],
            self.prices,
            self.controls,
            max_out_of_orderness_ms=BOUND_MS,
            max_future_skew_ms=self.settings.validation.max_future_skew_ms,
        )
        by_kind: dict[str, list[ReplayEvent]] = {}
        for event in events:
            by_kind.setdefault(event.kind, []).append(event)
        return by_kind


def _ticks() -> list[Tick]:
    n = len(TICKERS)
    cov = np.full((n, n), 3e-5) + np.diag([1e-4, 2e-4, 1.5e-4, 3e-4])
    rows = simulate_ticks(
        TICKERS,
        [100.0, 50.0, 20.0, 75.0],
        [Regime(0, np.array([2e-4, 1e-4, -1e-4, 3e-4]), cov)],
        start_ms=START,
        bar_ms=1_000,
        n_bars=N_BARS,
        ticks_per_bar=3,
        seed=5,
    )
    return [Tick(t, ticker, price) for t, ticker, price in rows]


class ClusterJob:
    """The job on the cluster, as ``Outputs.wait_for`` watches a job: alive, and its logs."""

    def __init__(self, cluster: LocalFlinkCluster, job_id: str) -> None:
        self.cluster = cluster
        self.job_id = job_id

    def check_alive(self) -> None:
        state = self.cluster.rest.job_state(self.job_id)
        assert state not in {"FAILED", "CANCELED", "FINISHED"}, f"job {state}: {self.log_tail()}"

    def log_tail(self) -> str:
        lines = []
        for log in sorted(self.cluster.layout.log_dir.glob("flink-*.log")):
            text = log.read_text(errors="replace").splitlines()
            lines += [f"{log.name}: {x}" for x in text if " ERROR " in x or "Exception" in x]
        return "\n".join(lines[-30:]) or "(no errors logged)"

    def watermarks(self) -> str:
        return f"(job {self.job_id} on {self.cluster.rest_url})"


def _last_final_bar(expected: dict[str, list[ReplayEvent]], phase_end: int) -> int:
    """The newest bar of p1 that heartbeats at ``phase_end`` make final."""
    return max(
        e.record["timestamp"]
        for e in expected["stats"]
        if e.key == "p1" and e.record["timestamp"] <= phase_end - BOUND_MS
    )


@pytest.fixture
def cluster(
    kafka_broker: KafkaBroker, tmp_path: Path, flink_session_cluster: SharedFlinkCluster
) -> tuple[SharedFlinkCluster, Settings, Path]:
    """The shared cluster, idle, and the job's settings and configuration file."""
    flink_session_cluster.ensure_up()
    token = f"cluster{time.monotonic_ns() % 10**6}"
    settings, config = run_settings(
        kafka_broker,
        tmp_path,
        token,
        PORTFOLIOS,
        max_out_of_orderness_ms=BOUND_MS,
        idleness_ms=0,
        parallelism=2,
        delivery="exactly-once",
        cluster=flink_session_cluster.cluster,
    )
    return flink_session_cluster, settings, config


def test_the_job_runs_over_two_taskmanagers_and_resumes_from_a_savepoint(
    cluster: tuple[SharedFlinkCluster, Settings, Path],
) -> None:
    shared, settings, config = cluster
    local = shared.local
    scenario = Scenario(settings)
    expected = scenario.expected()
    job_args = ["--config", str(config)]

    # What up started on an empty data folder (the session's first, whichever test asked).
    assert shared.first_started == ("jobmanager", "taskmanager", "taskmanager")
    assert local.up() == []  # running: nothing started twice
    assert len(local.taskmanager_pids()) == 2

    produce(settings, scenario.phases[0])
    outputs = Outputs(settings)
    try:
        job = ClusterJob(local, local.submit(job_args, environ=FLINK_TEST_ENV))
        local.wait_for_job(job.job_id, timeout_s=JOB_TIMEOUT)
        both = {tm.id for tm in local.rest.taskmanagers()}
        assert local.rest.job_taskmanagers(job.job_id) == both  # parallelism 2 over two
        first = _last_final_bar(expected, PHASE_ENDS[0])
        outputs.wait_for(lambda: outputs.last_stats_time("p1") >= first, job, "phase 1")

        # 2. (A TaskManager killed mid-run: tests/integration/test_cluster_loop.py.)
        produce(settings, scenario.phases[1])
        second = _last_final_bar(expected, PHASE_ENDS[1])
        outputs.wait_for(lambda: outputs.last_stats_time("p1") >= second, job, "phase 2")

        # 3. stop with a savepoint; the rest arrives while no job runs; resume from it.
        savepoint = local.stop_with_savepoint(job.job_id)
        assert Path(savepoint, "_metadata").is_file(), savepoint
        local.wait_for_job(job.job_id, ("FINISHED",))
        produce(settings, scenario.phases[2])
        job = ClusterJob(
            local,
            local.submit([*job_args, "--from-checkpoint", savepoint], environ=FLINK_TEST_ENV),
        )
        outputs.wait_for(complete(outputs, expected), job, "every bar after the resume")
        outputs.poll(3.0)  # a bar emitted twice would show up now
        restored = local.rest.restored_from(job.job_id)
        assert restored is not None and Path(restored) == Path(savepoint)
    finally:
        outputs.close()

    assert_matches_replay(outputs, expected)
    assert outputs.dead == []
    stopped = local.down()
    assert {p.role for p in stopped} >= {"jobmanager", "taskmanager"}
    assert local.processes() == [] and local.strays() == []
