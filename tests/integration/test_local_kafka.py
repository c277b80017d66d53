"""The local Kafka broker for real: topics, a round trip, status, idempotent up, clean down."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]
from typer.testing import CliRunner

from streamfolio.kafka.admin import admin_client, describe, topic_config, topic_specs
from streamfolio.kafka.cli import kafka_app
from streamfolio.kafka.local import LocalKafkaError

if TYPE_CHECKING:
    from conftest import KafkaBroker  # tests/integration/conftest.py

pytestmark = pytest.mark.integration


def _broker_processes(data_dir: Path) -> list[int]:
    """Pids of java processes whose command line mentions ``data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args and args[0].endswith("java") and any(str(data_dir) in a for a in args):
            found.append(int(entry.name))
    return found


def _produce(bootstrap: str, topic: str, records: list[tuple[str, str]]) -> None:
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            errors.append(error)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=delivered)
    assert producer.flush(30) == 0, "messages still in flight after 30 s"
    assert errors == []


def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[str, str]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[tuple[str, str]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            key, value = message.key(), message.value()
            assert key is not None and value is not None
            received.append((key.decode(), value.decode()))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return received


def test_up_creates_the_configured_topics(kafka_broker: KafkaBroker) -> None:
    settings = kafka_broker.settings
    specs = topic_specs(settings)
    report = describe(kafka_broker.bootstrap, topics=[s.name for s in specs])
    assert sorted(t.name for t in report.topics) == sorted(s.name for s in specs)
    for topic in report.topics:
        assert len(topic.partitions) == settings.kafka.partitions == 3, topic.name
        assert all(p.leader == 1 for p in topic.partitions)
    # The rebalancer rebuilds its memory from these: they must never expire.
    for name in (settings.topics.weights, settings.topics.initial_stats):
        assert topic_config(kafka_broker.bootstrap, name).get("retention.ms") == "-1"
    # The prices topic has no override: the development broker's default keeps everything
    # (record timestamps are event times, months old in a simulation or a replay).
    assert topic_config(kafka_broker.bootstrap, settings.topics.prices).get("retention.ms") in (
        None,
        "-1",
    )


def test_broker_has_the_development_settings(kafka_broker: KafkaBroker) -> None:
    admin = admin_client(kafka_broker.bootstrap)
    resource = ConfigResource(ResourceType.BROKER, "1")
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    assert entries["auto.create.topics.enable"].value == "false"
    assert entries["transaction.max.timeout.ms"].value == "900000"
    assert entries["group.initial.rebalance.delay.ms"].value == "0"
    assert entries["log.retention.ms"].value == "-1"


def test_round_trip_and_status_reports_offsets_and_lag(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = kafka_broker.settings.topics.prices
    before = sum(describe(bootstrap, topics=[topic]).topic(topic).end_offsets)
    run = uuid.uuid4().hex[:6]
    sent = [(ticker, f"{run}-{ticker}-{i}") for i in range(4) for ticker in ("ATW", "BCP", "IAM")]
    _produce(bootstrap, topic, sent)

    group = f"it-round-trip-{run}"
    received = _consume(bootstrap, topic, group, before + len(sent))
    ours = [r for r in received if r[1].startswith(run)]
    assert sorted(ours) == sorted(sent)
    for ticker in ("ATW", "BCP", "IAM"):  # one key, one partition: order is kept
        assert [v for k, v in ours if k == ticker] == [v for k, v in sent if k == ticker]

    status = kafka_broker.local.status()
    assert status.running and status.answering and status.report is not None
    assert status.pid == kafka_broker.local.pid()
    assert sum(status.report.topic(topic).end_offsets) == before + len(sent)
    assert status.report.topic(topic).messages == before + len(sent)
    assert status.report.group(group).lag == 0

    _produce(bootstrap, topic, [("ATW", f"{run}-late-{i}") for i in range(5)])
    report = kafka_broker.local.status().report
    assert report is not None
    lagging = report.group(group)
    assert lagging.lag == 5
    assert [p.lag for p in lagging.partitions if p.lag] == [5]  # all on ATW's partition


def test_second_up_while_running_is_a_no_op(kafka_broker: KafkaBroker) -> None:
    pid = kafka_broker.local.pid()
    assert pid is not None
    specs = topic_specs(kafka_broker.settings)
    started = time.monotonic()
    result = kafka_broker.local.up(specs, timeout=30)
    assert not result.started
    assert result.pid == pid == kafka_broker.local.pid()
    assert result.topics.created == () and result.topics.grown == ()
    assert sorted(result.topics.existing) == sorted(s.name for s in specs)
    assert time.monotonic() - started < 15
    assert _broker_processes(kafka_broker.data_dir) == [pid]


def test_cli_status_json_and_up_again(kafka_broker: KafkaBroker) -> None:
    runner = CliRunner()
    config = str(kafka_broker.config_path)
    result = runner.invoke(kafka_app, ["status", "--json", "-c", config])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["running"] is True
    assert document["bootstrap"] == kafka_broker.bootstrap
    by_name = {t["name"]: t for t in document["topics"]}
    for spec in topic_specs(kafka_broker.settings):
        assert by_name[spec.name]["partitions"] == 3
        assert len(by_name[spec.name]["end_offsets"]) == 3

    result = runner.invoke(kafka_app, ["status", "-c", config])
    assert result.exit_code == 0, result.output
    assert "running at " + kafka_broker.bootstrap in result.stdout

    result = runner.invoke(kafka_app, ["up", "-c", config])
    assert result.exit_code == 0, result.output
    assert "already running" in result.stdout
    assert "already there" in result.stderr


def test_down_stops_the_broker_and_up_restarts_it(
    local_kafka_factory: Callable[[], KafkaBroker],
) -> None:
    broker = local_kafka_factory()
    local = broker.local
    specs = topic_specs(broker.settings)[:1]
    first = local.up(specs, timeout=120)
    assert first.started and first.topics.created == (specs[0].name,)
    assert _broker_processes(broker.data_dir) == [first.pid]
    assert local.pid_file.read_text().strip() == str(first.pid)

    assert local.down(timeout=30) is True
    assert _broker_processes(broker.data_dir) == []
    assert not local.is_running()
    assert not local.pid_file.exists()
    status = local.status()
    assert not status.running and not status.answering and status.report is None
    assert local.down() is False  # stopping a stopped broker is fine

    # The data survives: a restart finds the topic again instead of creating it.
    second = local.up(specs, timeout=120)
    assert second.started and second.pid != first.pid
    assert second.topics.existing == (specs[0].name,)
    assert local.down() is True
    assert _broker_processes(broker.data_dir) == []


def test_up_refuses_a_port_taken_by_another_process(
    local_kafka_factory: Callable[[], KafkaBroker],
) -> None:
    broker = local_kafka_factory()
    port = broker.settings.kafka.local.port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(LocalKafkaError, match=rf"localhost:{port} \(kafka.local.port\)"):
            broker.local.up([], timeout=10)
    assert _broker_processes(broker.data_dir) == []
    assert not broker.local.is_running()
