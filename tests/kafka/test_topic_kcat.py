"""`topic tail --until-end / --since / --until / --partition / --key / --count` and `topic
produce --file`'s report, on fake clients (no broker; the broker's side is in
tests/integration/test_operations.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamfolio.config import Settings, load_config
from streamfolio.errors import DataError, UsageError
from streamfolio.kafka import tools
from streamfolio.kafka.clients import ConsumedRecord
from streamfolio.kafka.tools import Produced, TailFilter
from streamfolio.messages import PriceTick
from streamfolio.serde import codec_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def settings() -> Settings:
    return load_config(EXAMPLES / "cse.yaml", environ={})


def tick(topic: str, partition: int, offset: int, ticker: str, event_ms: int) -> ConsumedRecord:
    record = PriceTick(ticker, 700.0, event_ms).to_record()
    value = codec_for("PriceTick").encode(record)
    return ConsumedRecord(topic, partition, offset, ticker.encode(), event_ms, value, record)


class GrowingTopic:
    """A consumer of a topic that keeps being written: every poll finds a new message, so
    only the end offsets found at start can end the read. Partition 2 is empty: the consumer
    reports its end at once."""

    def __init__(self, topic: str, ends: dict[int, int]) -> None:
        self.topic = topic
        self.ends = {(topic, p): end for p, end in ends.items()}
        self.next = {p: 0 for p in ends}
        self.at_end: set[tuple[str, int]] = set()
        self.polls = 0
        self.kwargs: dict[str, Any] = {}

    def __enter__(self) -> GrowingTopic:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def assignment(self) -> list[tuple[str, int]]:
        return list(self.ends)

    def end_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self.ends)

    def poll(self, timeout: float = 1.0) -> ConsumedRecord | None:
        self.polls += 1
        assert self.polls < 1000, "tail --until-end never stopped"
        partition = (0, 1)[self.polls % 2]
        if self.polls == 1:
            self.at_end.add((self.topic, 2))
            return None
        offset = self.next[partition]
        self.next[partition] += 1
        ticker = "ATW" if offset % 2 == 0 else "IAM"
        return tick(self.topic, partition, offset, ticker, 1_000 + offset)


def run_tail(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    consumer: GrowingTopic,
    **kwargs: Any,
) -> list[str]:
    def make(*_: Any, **options: Any) -> GrowingTopic:
        consumer.kwargs = options
        return consumer

    monkeypatch.setattr(tools, "RecordConsumer", make)
    lines: list[str] = []
    tools.tail(
        settings,
        "prices",
        from_beginning=True,
        max_records=None,
        timeout_s=1,
        emit=lines.append,
        until_end=True,
        **kwargs,
    )
    return lines


def test_until_end_stops_at_the_end_offsets_found_at_start_of_a_growing_topic(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = GrowingTopic(settings.topics.prices, {0: 3, 1: 2, 2: 0})
    lines = [json.loads(line) for line in run_tail(settings, monkeypatch, topic)]
    read = sorted((line["_partition"], line["_offset"]) for line in lines)
    assert read == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert topic.kwargs["partition_eof"] is True


def test_filters_choose_key_and_event_time_and_count_prints_a_number(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = GrowingTopic(settings.topics.prices, {0: 6, 1: 6, 2: 0})
    only = TailFilter(key="ATW", since_ms=1_001, until_ms=1_004)
    lines = run_tail(settings, monkeypatch, topic, only=only)
    assert {json.loads(line)["_offset"] for line in lines} == {2, 4}  # ATW: even offsets
    assert all(json.loads(line)["ticker"] == "ATW" for line in lines)
    counted = run_tail(
        settings,
        monkeypatch,
        GrowingTopic(topic.topic, {0: 6, 1: 6, 2: 0}),
        only=only,
        count_only=True,
    )
    assert counted == ["4"]  # offsets 2 and 4 of both partitions
    assert topic.kwargs["start_at_ms"] == 1_001  # --since seeks there


def test_a_partition_the_topic_lacks_is_a_usage_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = GrowingTopic(settings.topics.prices, {0: 1, 1: 1, 2: 0})
    with pytest.raises(UsageError, match="--partition 7"):
        run_tail(settings, monkeypatch, topic, only=TailFilter(partitions=frozenset({1, 7})))
    assert topic.kwargs["partitions"] == frozenset({1, 7})


class AckingProducer:
    """Acknowledges every message on partition ``hash(key) % 3``, as a broker's report."""

    def __init__(self) -> None:
        self.delivered_to: Counter[tuple[str, int]] = Counter()

    def send_raw(self, topic: str, key: bytes | None, value: bytes, **_: Any) -> None:
        self.delivered_to[(topic, sum(key or b"") % 3)] += 1

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        return 3

    def flush(self, timeout: float = 30.0) -> int:
        return 0


def test_produce_from_a_file_reports_messages_per_partition(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    producer = AckingProducer()
    monkeypatch.setattr(tools, "RecordProducer", lambda *_, **__: producer)
    lines = [
        json.dumps(PriceTick(ticker, 700.0, 1_000 + i).to_record())
        for i, ticker in enumerate(["ATW", "ATW", "IAM"])
    ]
    path = tmp_path / "ticks.jsonl"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    with path.open(encoding="utf-8") as source:
        produced = tools.produce_lines(settings, "prices", source, source=str(path))
    atw, iam = sum(b"ATW") % 3, sum(b"IAM") % 3
    expected = Counter({atw: 2}) + Counter({iam: 1})
    assert produced == Produced(settings.topics.prices, 3, dict(expected))
    assert produced.line().startswith(f"produced 3 message(s) to {settings.topics.prices} (")


def test_a_bad_line_of_a_file_is_named_by_the_file(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "RecordProducer", lambda *_, **__: AckingProducer())
    with pytest.raises(DataError, match=r"ticks\.jsonl line 1"):
        tools.produce_lines(settings, "prices", ["{"], source="ticks.jsonl")
