"""The whole loop on the real engines as clusters, with faults (issue 14).

Kafka is a cluster of three KRaft nodes (replication 3, min ISR 2) on SASL_SSL, every component
its own SCRAM principal under ACLs (the feed writes prices, the job reads prices and control
topics...); Flink is a standalone session cluster, a JobManager and two TaskManagers as separate
JVMs, the job running there at parallelism 2 after `flink run`. The feed (this process, as the
feed principal) publishes simulated daily bars, gated on the rebalancer's weights as in
tests/integration/test_outage.py (loopkit). During the run one broker is killed with SIGKILL
and started again, and later one TaskManager: the job restarts from its last checkpoint on a
TaskManager started in its place. Afterwards:

* the prices topic holds every tick the feed published;
* the statistics, metrics and rebalance decisions equal the closed-loop replay of those ticks,
  once identical repeats are removed (the job's at-least-once output after a restart);
* the job did restart (its exception history names the lost TaskManager).

The refusals of the secured cluster (a wrong password, the feed writing weights, the store and
the dashboard writing) are tested in tests/integration/test_kafka_cluster.py, on the same
cluster (the session's ``secured_kafka_cluster``, tests/integration/conftest.py): this test
brings it back to all nodes running first, gives its own topics their ACLs, and leaves it
running. The Flink cluster is the session's ``flink_session_cluster``, shared with
tests/integration/test_flink_cluster.py: idle when this test starts, the job cancelled at its end.

The rebalancer starts from the oldest records of its group's topics: the job and the feed
race ahead of its joining the group here, and a rebalancer that began at the newest records
missed the first metrics and never answered (what kept this test out of `make test`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SecuredCluster, SharedFlinkCluster
from jobkit import loop_data
from loopkit import (
    DAY_MS,
    DAYS,
    ENV,
    TIMEOUT_S,
    GatedFeed,
    Process,
    Topics,
    assert_loop_equals_replay,
    closed_loop,
    initial_controls,
    prices_on_topic,
    simulated_ticks,
    start_ms,
    wait_for,
    wait_until_done,
)

from streamfolio.config import Settings, load_config
from streamfolio.core.returns import bar_index
from streamfolio.flink.cluster import LocalFlinkCluster
from streamfolio.flink.cluster.rest import RestError
from streamfolio.kafka.admin import topic_specs
from streamfolio.kafka.local import LocalCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("flink_jars"),
]
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240.0
BROKER_DOWN_S = 12.0
"""Long enough for every client to notice (the feed's producer and the job's clients move their
partitions' leaders to the surviving nodes), short of any client timeout: a broker restart."""
KILLED_NODE = 1


def _config(
    shared: SecuredCluster, flink_cluster: dict[str, Any], tmp: Path
) -> tuple[Settings, Path]:
    # Next to the cluster's own configuration: the same relative secret and CA paths.
    data = shared.config_data()
    # A cool-down longer than the run: the decisions are the replay's whatever the faults.
    data = loop_data(data, tmp, "cluster", cooldown_s=2 * DAYS * 86_400)
    data["flink"] |= {"parallelism": 2, "cluster": flink_cluster}
    path = shared.config_path.with_name(f"cluster-loop-{uuid.uuid4().hex[:8]}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_config(path, environ={}), path


def _exception_history(flink: LocalFlinkCluster, job_id: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{flink.rest_url}/jobs/{job_id}/exceptions", timeout=10) as r:
        answer = json.load(r)
    return list((answer.get("exceptionHistory") or {}).get("entries") or [])


def test_the_loop_on_a_secured_kafka_cluster_and_a_flink_cluster_outlives_killed_nodes(
    secured_kafka_cluster: SecuredCluster,
    flink_session_cluster: SharedFlinkCluster,
    tmp_path: Path,
) -> None:
    secured_kafka_cluster.ensure_up()
    flink_session_cluster.ensure_up()
    settings, config = _config(secured_kafka_cluster, flink_session_cluster.cluster, tmp_path)
    kafka = LocalCluster(settings, ROOT)  # the shared cluster, with this test's topics
    flink = flink_session_cluster.local
    components: list[Process] = []
    stop = threading.Event()
    job_id: str | None = None
    try:
        kafka.up(topic_specs(settings), timeout=START_TIMEOUT_S)
        first_ms = start_ms()
        ticks = simulated_ticks(settings, first_ms)
        controls = initial_controls(settings, first_ms)  # as the admin principal (init)
        expected = closed_loop(settings, ticks, controls)
        rebalances = [e["timestamp"] for e in expected.get("rebalance", [])]
        assert rebalances, "the scenario must rebalance (seed, crash)"
        first_day = bar_index(first_ms, DAY_MS)
        last_decision_day = bar_index(max(rebalances), DAY_MS) - first_day
        broker_kill_day, taskmanager_kill_day = 20, last_decision_day + 10
        assert taskmanager_kill_day < DAYS - 20

        job_args = ["--config", str(config), "--starting-offsets", "earliest"]
        job_id = flink.submit(job_args, environ=ENV)
        flink.wait_for_job(job_id, ("RUNNING",), timeout_s=START_TIMEOUT_S)
        store_db = f"sqlite:///{tmp_path / 'store.db'}"
        components = [
            Process("rebalancer", ["rebalancer", "--config", str(config)], tmp_path, ENV),
            Process(
                "store", ["store", "--config", str(config), "--database", store_db], tmp_path, ENV
            ),
        ]
        topics = Topics(settings)
        feed = GatedFeed(settings, ticks, component="feed")

        def weights_seen(timestamp: int) -> bool:
            return any(
                w["timestamp"] == timestamp and w["source"] == "rebalancer"
                for w in topics.records("weights")
            )

        def check() -> None:
            topics.poll()
            for c in components:
                assert c.alive(), f"{c.name} exited: {c.lines()[-30:]}"
            if feed.error is not None:
                raise feed.error

        feeder = threading.Thread(
            target=feed.run, args=(set(rebalances), weights_seen, stop), daemon=True
        )
        feeder.start()

        # One broker killed, and started again on the same data.
        wait_for(lambda: feed.published_days >= broker_kill_day, "the feed", TIMEOUT_S, check)
        kafka.kill_node(KILLED_NODE)
        killed = time.monotonic()
        while time.monotonic() - killed < BROKER_DOWN_S:
            check()
            time.sleep(0.5)
        kafka.start_node(KILLED_NODE, timeout=START_TIMEOUT_S)

        # One TaskManager killed: the job restarts from its checkpoint on the one started anew.
        wait_for(lambda: feed.published_days >= taskmanager_kill_day, "the feed", TIMEOUT_S, check)
        busy = [
            t.pid
            for t in flink.status().taskmanagers
            if t.pid is not None and t.free_slots is not None and t.free_slots < (t.slots or 0)
        ]
        assert busy, f"no TaskManager runs the job: {flink.status()}"
        os.kill(busy[0], signal.SIGKILL)
        flink.start_taskmanager(timeout_s=START_TIMEOUT_S)
        wait_for(lambda: bool(_exception_history(flink, job_id)), "the restart", TIMEOUT_S, check)
        flink.wait_for_job(job_id, ("RUNNING",), timeout_s=START_TIMEOUT_S)

        feeder.join(TIMEOUT_S)
        assert not feeder.is_alive() and feed.error is None, feed.error
        assert feed.producer.flush(60) == 0

        wait_until_done(topics, expected, tmp_path / "store.db", check)
        history = _exception_history(flink, job_id)
        # Still running (a restart can still be deploying its last tasks when the results
        # are complete: the exception history shows a failure before the job leaves RUNNING).
        flink.wait_for_job(job_id, ("RUNNING",), timeout_s=START_TIMEOUT_S)
        topics.close()
        on_topic = prices_on_topic(settings)
    finally:
        stop.set()
        for c in reversed(components):
            c.stop()
        if job_id is not None:  # the clusters are left running, idle for their next user
            with contextlib.suppress(RestError):
                flink.rest.cancel(job_id)
        # (The killed node and TaskManager were replaced above; after a failure in between,
        # the next user's ensure_up replaces them.)

    assert_loop_equals_replay(topics, expected, ticks, on_topic)
    assert history, "the job did not restart after its TaskManager was killed"
