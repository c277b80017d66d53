"""A secured 3-node KRaft cluster for real: SASL_SSL with SCRAM for every component, mutual TLS
between the nodes, ACLs per principal, a node killed with SIGKILL and started again.

The cluster is the session's ``secured_kafka_cluster`` (tests/integration/conftest.py), shared
with test_cluster_loop.py: brought back to all nodes running, this module's ACLs and topics in
sync before the first test; tests run in file order, the last stops it.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from conftest import SecuredCluster  # tests/integration/conftest.py
from typer.testing import CliRunner

from streamfolio.config import COMPONENTS, Component, Settings
from streamfolio.kafka.admin import topic_specs
from streamfolio.kafka.cli import kafka_app
from streamfolio.kafka.local import LocalCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODES = 3  # the shared cluster's (conftest.CLUSTER_NODES)
REFUSED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}


@pytest.fixture(scope="module")
def cluster(secured_kafka_cluster: SecuredCluster) -> tuple[LocalCluster, Path]:
    """The running cluster and the path of its configuration (relative secret paths)."""
    secured_kafka_cluster.ensure_up()
    return secured_kafka_cluster.local, secured_kafka_cluster.config_path


def _settings(cluster: tuple[LocalCluster, Path]) -> Settings:
    return cluster[0].settings


def _client(settings: Settings, component: Component, **extra: Any) -> dict[str, Any]:
    return {**settings.kafka.client_config(component), **extra}


def _produce(settings: Settings, component: Component, topic: str, count: int = 1) -> list[Any]:
    """Delivery results (None: delivered) of ``count`` records from ``component``."""
    results: list[KafkaError | None] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        results.append(error)

    producer = Producer(
        _client(
            settings,
            component,
            acks="all",
            **{"enable.idempotence": True, "message.timeout.ms": 60_000},
        )
    )
    for i in range(count):
        producer.produce(topic, key=f"k{i}".encode(), value=b"v", on_delivery=delivered)
    try:
        assert producer.flush(90) == 0, "records still in flight"
    except KafkaException as exc:
        # A principal that may write no topic at all cannot even get an idempotent producer id
        # (Kafka grants IdempotentWrite to whoever may write some topic: KIP-679).
        error = exc.args[0]
        assert error.fatal() and error.code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, error
        return [error]
    return results


def _codes(results: list[Any]) -> set[Any]:
    return {None if r is None else r.code() for r in results}


def _processes(data_dir: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if args and args[0].endswith("java") and any(str(data_dir) in a for a in args):
                found.append(int(entry.name))
    return found


def test_up_starts_three_secured_nodes_with_replicated_topics(
    cluster: tuple[LocalCluster, Path],
) -> None:
    local, config_path = cluster
    status = local.status()
    assert status.error is None
    assert [n.registered for n in status.nodes] == [True] * NODES
    assert len(set(local.node_pids().values())) == NODES
    project = {s.name for s in topic_specs(local.settings)}
    partitions = [p for p in status.partitions if p.topic in project]
    assert len(partitions) == len(project) * local.settings.kafka.partitions
    assert all(len(p.replicas) == NODES and not p.under_replicated for p in partitions)
    # Certificates, random passwords (owner only) and the CA where clients look for it.
    secrets = config_path.parent / "secrets"
    assert stat.S_IMODE((secrets / "feed.password").stat().st_mode) == 0o600
    assert (config_path.parent / "conf-ca" / "ca.pem").read_bytes() == (
        local.data_dir / "tls" / "ca.pem"
    ).read_bytes()
    acls = status.acls or {}
    assert "User:sf-admin" not in acls  # a super user
    prices = local.settings.topics.prices
    assert f"ALLOW TOPIC {prices} (LITERAL) WRITE" in acls["User:sf-feed"]


def test_feed_writes_prices_and_the_job_reads_them(cluster: tuple[LocalCluster, Path]) -> None:
    settings = _settings(cluster)
    prices = settings.topics.prices
    assert _codes(_produce(settings, "feed", prices, 5)) == {None}
    consumer = Consumer(
        _client(
            settings,
            "job",
            **{"group.id": f"{settings.kafka.client_id}-job", "auto.offset.reset": "earliest"},
        )
    )
    received = 0
    try:
        consumer.subscribe([prices])
        deadline = time.monotonic() + 60
        while received < 5 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                assert message.error() is None, message.error()
                received += 1
    finally:
        consumer.close()
    assert received >= 5


def test_a_wrong_password_is_refused_as_authentication_failed(
    cluster: tuple[LocalCluster, Path],
) -> None:
    settings = _settings(cluster)
    errors: list[KafkaError] = []
    producer = Producer(
        _client(
            settings,
            "feed",
            **{"sasl.password": "not-the-password", "error_cb": errors.append},
        )
    )
    producer.produce(settings.topics.prices, b"v")
    deadline = time.monotonic() + 30
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors, "no error reported for a wrong password"
    assert errors[0].code() == KafkaError._AUTHENTICATION
    assert "Authentication failed" in errors[0].str()
    producer.purge()
    producer.flush(5)

    # The tooling says so at once, rather than waiting for a broker that does answer.
    _, config_path = cluster
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    data["kafka"]["security"]["principals"]["admin"] = {
        "username": "sf-admin",
        "password": "not-the-password",
    }
    wrong = config_path.parent / "wrong-admin-password.yaml"  # same folder: same relative paths
    wrong.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(kafka_app, ["status", "-c", str(wrong)])
    assert result.exit_code == 0, result.output
    # Not "does not answer" after the timeout: the refusal itself.
    assert "authentication failed for user 'sf-admin'" in result.stdout


def test_a_component_with_a_wrong_password_stops_and_says_why(
    cluster: tuple[LocalCluster, Path],
) -> None:
    """Not "Kafka unreachable" for ever: waiting does not cure a wrong password."""
    _, config_path = cluster
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    data["kafka"]["security"]["principals"]["rebalancer"] = {
        "username": "sf-rebalancer",
        "password": "not-the-password",
    }
    wrong = config_path.parent / "wrong-rebalancer-password.yaml"
    wrong.write_text(yaml.safe_dump(data), encoding="utf-8")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "streamfolio.cli", "rebalancer", "--config", str(wrong)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still running after 120 s: {exc.stderr}") from None
    assert done.returncode == 2, done.stderr
    assert "Kafka refused its credentials" in done.stderr
    assert "error: config key 'kafka.security'" in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout


def test_feed_cannot_write_weights(cluster: tuple[LocalCluster, Path]) -> None:
    settings = _settings(cluster)
    results = _produce(settings, "feed", settings.topics.weights)
    assert _codes(results) == {KafkaError.TOPIC_AUTHORIZATION_FAILED}


@pytest.mark.parametrize("component", ["store", "dashboard"])
def test_store_and_dashboard_write_nothing_but_the_stores_dead_letters(
    cluster: tuple[LocalCluster, Path], component: Component
) -> None:
    settings = _settings(cluster)
    for role, topic in settings.topics.model_dump().items():
        codes = _codes(_produce(settings, component, topic))
        if component == "store" and role == "dead_letter":
            assert codes == {None}
        else:
            assert codes <= REFUSED and codes, (component, role, codes)


def test_cli_status_json_shows_nodes_isr_and_acls(cluster: tuple[LocalCluster, Path]) -> None:
    _, config_path = cluster
    result = CliRunner().invoke(kafka_app, ["status", "--json", "-c", str(config_path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [n["running"] for n in document["nodes"]] == [True] * NODES
    assert document["under_replicated"] == 0
    assert document["partitions"] and all(len(p["isr"]) == NODES for p in document["partitions"])
    assert set(document["acls"]) == {f"User:sf-{c}" for c in COMPONENTS if c != "admin"}
    result = CliRunner().invoke(kafka_app, ["status", "-c", str(config_path)])
    assert "3 nodes at" in result.stdout and "0 of" in result.stdout


def test_a_killed_node_loses_no_acked_write_and_catches_up(
    cluster: tuple[LocalCluster, Path],
) -> None:
    local, _ = cluster
    settings = local.settings
    killed = local.kill_node(1)
    assert local.node_pid(1) is None and killed not in _processes(local.data_dir)
    # acks=all with min.insync.replicas 2: two nodes of three still take every write.
    assert _codes(_produce(settings, "feed", settings.topics.prices, 20)) == {None}
    status = local.status()
    assert not status.nodes[1].running and status.under_replicated

    restarted = local.start_node(1)
    assert restarted != killed
    local.wait_for_full_isr(timeout=120)
    status = local.status()
    assert status.under_replicated == () and all(n.registered for n in status.nodes)


def test_up_again_changes_nothing(cluster: tuple[LocalCluster, Path]) -> None:
    local, _ = cluster
    pids = local.node_pids()
    result = local.up(topic_specs(local.settings), timeout=60)
    assert result.started == () and result.acls == (0, 0)
    assert result.topics.created == ()
    assert local.node_pids() == pids


def test_down_stops_every_node(cluster: tuple[LocalCluster, Path]) -> None:
    local, config_path = cluster
    result = CliRunner().invoke(kafka_app, ["down", "-c", str(config_path)])
    assert result.exit_code == 0, result.output
    assert "kafka stopped" in result.stdout
    assert _processes(local.data_dir) == []
    assert not local.is_running()
    assert local.down() is False
