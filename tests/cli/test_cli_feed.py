"""`streamfolio feed --source heartbeats` as a user runs it, with a fake producer for Kafka."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import example_config_path, load_config
from streamfolio.feeds import run as run_module
from streamfolio.serde import decode_heartbeat, is_heartbeat

runner = CliRunner()
EXAMPLE = str(example_config_path())


@dataclass
class FakeProducer:
    """Stands in for :class:`~streamfolio.kafka.clients.RecordProducer`: records what it sends."""

    partitions: int = 3
    sent: list[tuple[str, int | None, bytes | None, int | None, bytes]] = field(
        default_factory=list
    )

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        self.sent.append((topic, partition, key, timestamp_ms, value))

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        return self.partitions

    def flush(self, timeout: float = 30.0) -> int:
        return 0

    failed = 0

    def stop_waiting(self) -> None:
        pass

    def purge(self) -> list[object]:
        return []


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeProducer:
    fake = FakeProducer()
    monkeypatch.setattr(run_module, "RecordProducer", lambda _kafka, **_: fake)
    # feed.spool_dir is relative: the feed must not pick up a developer's own .cache/feed.
    monkeypatch.chdir(tmp_path)
    return fake


def test_feed_help_documents_the_heartbeats_source_and_its_limits() -> None:
    result = runner.invoke(app, ["feed", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "heartbeats" in text and "--lag-ms" in text
    assert "dead-lettered late" in text
    assert "cannot replay history: use --source replay" in text


def test_feed_heartbeats_sends_rounds_on_every_partition_then_says_how_many(
    producer: FakeProducer,
) -> None:
    before = int(time.time() * 1000) - 1234
    result = runner.invoke(
        app,
        ["feed", "--source", "heartbeats", "--duration", "0.5", "--lag-ms", "1234"],
        env={"STREAMFOLIO_CONFIG": EXAMPLE},
    )
    after = int(time.time() * 1000) - 1234
    assert result.exit_code == 0, result.output
    settings = load_config(EXAMPLE, environ={})
    assert "feed heartbeats: no ticks" in result.output
    assert f"every {settings.feed.heartbeat_ms} ms, T = wall clock - 1234 ms" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("feed stopped: ") and "heartbeat rounds sent" in last
    rounds = int(last.removeprefix("feed stopped: ").split()[0])
    assert rounds >= 2
    assert len(producer.sent) == 3 * rounds
    assert {p for _, p, _, _, _ in producer.sent} == {0, 1, 2}
    for topic, _, key, timestamp, value in producer.sent:
        assert topic == settings.topics.prices and key is None and is_heartbeat(value)
        beat = decode_heartbeat(value)
        assert beat.source == "heartbeats" and timestamp == beat.time
        assert before <= beat.time <= after


def test_feed_heartbeats_refuses_a_tick_limit(producer: FakeProducer) -> None:
    result = runner.invoke(
        app, ["feed", "--source", "heartbeats", "--max-ticks", "5", "--config", EXAMPLE]
    )
    assert result.exit_code == 2
    assert "publishes no ticks" in result.output and producer.sent == []


def test_feed_lag_must_not_be_negative() -> None:
    result = runner.invoke(
        app, ["feed", "--source", "heartbeats", "--lag-ms", "-1", "--config", EXAMPLE]
    )
    assert result.exit_code == 2
