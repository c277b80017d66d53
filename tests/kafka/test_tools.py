"""`topic tail` and `topic produce` with heartbeats, on fake clients (no broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamfolio.config import Settings, load_config
from streamfolio.errors import DataError
from streamfolio.kafka import tools
from streamfolio.kafka.clients import ConsumedRecord
from streamfolio.messages import Heartbeat, PriceTick
from streamfolio.serde import HEARTBEAT_PREFIX, codec_for, decode_heartbeat, encode_heartbeat

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def settings() -> Settings:
    return load_config(EXAMPLES / "cse.yaml", environ={})


@dataclass
class FakeProducer:
    partitions: int = 3
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        self.sent.append(
            {"topic": topic, "key": key, "value": value, "ts": timestamp_ms, "partition": partition}
        )

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        return self.partitions

    def flush(self, timeout: float = 30.0) -> int:
        return 0


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> FakeProducer:
    fake = FakeProducer()
    monkeypatch.setattr(tools, "RecordProducer", lambda *_, **__: fake)
    return fake


def produce(settings: Settings, topic: str, *lines: Any) -> int:
    return tools.produce(settings, topic, [json.dumps(line) for line in lines])


# --- produce ----------------------------------------------------------------------------------


def test_a_heartbeat_line_goes_to_every_partition(
    settings: Settings, producer: FakeProducer
) -> None:
    count = produce(settings, "prices", {"heartbeat": {"time": 1750000000000, "source": "manual"}})
    assert count == 3
    assert [m["partition"] for m in producer.sent] == [0, 1, 2]
    for m in producer.sent:
        assert m["topic"] == settings.topics.prices and m["key"] is None
        assert m["ts"] == 1750000000000
        assert decode_heartbeat(m["value"]) == Heartbeat(1750000000000, "manual")


def test_a_heartbeat_line_with_a_partition_and_ticks_around_it(
    settings: Settings, producer: FakeProducer
) -> None:
    count = produce(
        settings,
        settings.topics.prices,
        {"ticker": "ATW", "price": 700.0, "event_time": 5},
        {"heartbeat": {"time": 6}, "partition": 2},
        {"ticker": "IAM", "price": 100.0, "event_time": 7},
    )
    assert count == 3
    tick, beat, last = producer.sent
    assert tick["key"] == b"ATW" and tick["partition"] is None and tick["ts"] == 5
    assert beat["partition"] == 2 and decode_heartbeat(beat["value"]) == Heartbeat(6, "unknown")
    assert last["key"] == b"IAM"


def test_tail_output_of_a_heartbeat_feeds_back(settings: Settings, producer: FakeProducer) -> None:
    line = {"_key": None, "_partition": 1, "_offset": 9, "heartbeat": {"time": 8, "source": "s"}}
    assert produce(settings, "prices", line) == 3


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"heartbeat": {"time": -1}}, "not a heartbeat: Heartbeat.time is not an epoch"),
        ({"heartbeat": {"source": "x"}}, "Heartbeat record has no field 'time'"),
        ({"heartbeat": {"time": 1, "extra": 2}}, 'expected "heartbeat": '),
        ({"heartbeat": 5}, 'expected "heartbeat": '),
        ({"heartbeat": {"time": 1}, "partition": 3}, r"partition must be an integer in 0..2"),
        ({"heartbeat": {"time": 1}, "partition": "0"}, "partition must be an integer"),
        ({"heartbeat": {"time": 1}, "ticker": "ATW"}, "only heartbeat and partition, not ticker"),
    ],
)
def test_bad_heartbeat_lines_name_the_line(
    settings: Settings, producer: FakeProducer, line: dict[str, Any], problem: str
) -> None:
    with pytest.raises(DataError, match=problem) as caught:
        produce(settings, "prices", {"heartbeat": {"time": 1}}, line)
    assert caught.value.where == "stdin line 2"


def test_heartbeats_only_go_to_the_prices_topic(settings: Settings, producer: FakeProducer) -> None:
    with pytest.raises(DataError, match="heartbeats belong on the prices topic, not Weights"):
        produce(settings, "weights", {"heartbeat": {"time": 1}})
    assert producer.sent == []


def test_a_topic_without_partitions_is_an_error(settings: Settings, producer: FakeProducer) -> None:
    producer.partitions = 0
    with pytest.raises(DataError, match="has no partitions"):
        produce(settings, "prices", {"heartbeat": {"time": 1}})


# --- tail -------------------------------------------------------------------------------------


class FakeConsumer:
    def __init__(self, items: list[ConsumedRecord]) -> None:
        self.items = items

    def __enter__(self) -> FakeConsumer:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def records(self, *, timeout: float, max_records: int | None = None) -> list[ConsumedRecord]:
        return self.items


def consumed(topic: str, value: bytes, *, codec: str | None = None, offset: int = 0) -> Any:
    record, error = None, None
    try:
        record = codec_for(codec).decode(value) if codec else None
    except Exception as exc:
        error = str(exc)
    return ConsumedRecord(topic, 1, offset, None, 5, value, record, error)


def tail(settings: Settings, topic: str, items: list[Any], monkeypatch: Any) -> list[Any]:
    monkeypatch.setattr(tools, "RecordConsumer", lambda *_, **__: FakeConsumer(items))
    lines: list[str] = []
    tools.tail(
        settings, topic, from_beginning=True, max_records=None, timeout_s=1, emit=lines.append
    )
    return [json.loads(line) for line in lines]


def test_tail_shows_heartbeats_distinctly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = settings.topics.prices
    tick = codec_for("PriceTick").encode(PriceTick("ATW", 700.0, 5).to_record())
    beat = encode_heartbeat(Heartbeat(6, "sim"))
    items = [
        consumed(prices, tick, codec="PriceTick"),
        consumed(prices, beat, codec="PriceTick", offset=1),  # undecodable as a tick
        consumed(prices, HEARTBEAT_PREFIX + b"\x0c", codec="PriceTick", offset=2),  # truncated
    ]
    lines = tail(settings, "prices", items, monkeypatch)
    assert lines[0]["ticker"] == "ATW" and "heartbeat" not in lines[0]
    assert lines[1] == {
        "_key": None,
        "_partition": 1,
        "_offset": 1,
        "_timestamp": 5,
        "heartbeat": {"time": 6, "source": "sim"},
    }
    assert lines[2]["_error"].startswith("undecodable: ") and "heartbeat" not in lines[2]


def test_tail_does_not_read_heartbeats_on_other_topics(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat = encode_heartbeat(Heartbeat(6, "sim"))
    items = [consumed(settings.topics.weights, beat, codec="Weights")]
    lines = tail(settings, "weights", items, monkeypatch)
    assert "heartbeat" not in lines[0]
