"""``streamfolio topic tail`` and ``topic produce``: look inside the pipeline as JSON lines.

On the prices topic both also speak heartbeats (SEMANTICS.md §4), as
``{"heartbeat": {"time": ..., "source": ...}}``: tail prints them so, and produce writes such a
line as one heartbeat on every partition, or on the one a ``"partition"`` field names.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from streamfolio.config import Settings
from streamfolio.errors import DataError, SchemaError, UsageError
from streamfolio.kafka.clients import ConsumedRecord, RecordConsumer, RecordProducer
from streamfolio.kafka.topics import TopicContract, contract_by_name
from streamfolio.messages import Heartbeat
from streamfolio.serde import codec_for, decode_heartbeat, encode_heartbeat, is_heartbeat

_HEARTBEAT_LINE_KEYS = frozenset({"heartbeat", "partition"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"base64"}:
            return base64.b64decode(value["base64"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class TailFilter:
    """What ``topic tail`` prints of what it reads: messages of these ``partitions`` (None:
    all), with this ``key`` (None: any), whose event time is within ``since_ms`` and
    ``until_ms`` (both inclusive; None: open)."""

    partitions: frozenset[int] | None = None
    key: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def keeps(self, key: str | None, event_ms: int) -> bool:
        """Whether a message with ``key`` and event time ``event_ms`` is printed.

        >>> TailFilter(key="ATW", since_ms=10).keeps("ATW", 10)
        True
        >>> TailFilter(until_ms=9).keeps(None, 10)
        False
        """
        if self.key is not None and key != self.key:
            return False
        if self.since_ms is not None and event_ms < self.since_ms:
            return False
        return self.until_ms is None or event_ms <= self.until_ms


def event_time_ms(body: Mapping[str, Any], kafka_timestamp_ms: int) -> int:
    """The event time of a message printed as ``body``: its record's ``event_time`` (ticks) or
    ``timestamp`` (the pipeline's other records), a heartbeat's ``time``, else the Kafka
    timestamp (an undecodable message).

    >>> event_time_ms({"event_time": 5, "timestamp": 9}, 1)
    5
    >>> event_time_ms({"heartbeat": {"time": 7}}, 1)
    7
    >>> event_time_ms({"_error": "bad"}, 3)
    3
    """
    for field_name in ("event_time", "timestamp"):
        value = body.get(field_name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    beat = body.get("heartbeat")
    if isinstance(beat, Mapping) and isinstance(beat.get("time"), int):
        return int(beat["time"])
    return kafka_timestamp_ms


def tail(
    settings: Settings,
    name: str,
    *,
    from_beginning: bool,
    max_records: int | None,
    timeout_s: float,
    emit: Callable[[str], None],
    until_end: bool = False,
    only: TailFilter = TailFilter(),
    count_only: bool = False,
) -> int:
    """Print each message of topic ``name`` as one JSON object; returns how many were printed
    (with ``count_only``, counted and not printed).

    Undecodable messages are printed too, with ``"_error"`` and the raw value in base64.
    Heartbeats on the prices topic print as ``{"heartbeat": {"time": ..., "source": ...}}``.
    ``until_end`` reads up to the end offsets found at start, then returns, however much is
    written meanwhile; otherwise it stops after ``timeout_s`` without a message. ``only``
    chooses partitions, a key and an event-time window; with ``since_ms`` the partitions start
    at their first message stamped at or after it (Kafka timestamp), ``from_beginning`` or not.
    """
    contract = contract_by_name(settings, name)
    count = 0
    with RecordConsumer(
        settings.kafka,
        [contract],
        component="admin",
        group_id=f"streamfolio-tail-{uuid.uuid4().hex[:8]}",
        from_beginning=from_beginning,
        assign_all=True,
        partitions=only.partitions,
        start_at_ms=only.since_ms,
        partition_eof=until_end,
    ) as consumer:
        if only.partitions is not None:
            missing = only.partitions - {p for _, p in consumer.assignment()}
            if missing:
                raise UsageError(
                    f"--partition {min(missing)}: topic {contract.name} has no such partition"
                )
        ends = consumer.end_offsets() if until_end else {}
        for item in _read(consumer, ends, until_end=until_end, timeout_s=timeout_s):
            key = item.key.decode(errors="replace") if item.key is not None else None
            body = _body(contract, item)
            if not only.keeps(key, event_time_ms(body, item.timestamp_ms)):
                continue
            count += 1
            if not count_only:
                line: dict[str, Any] = {
                    "_key": key,
                    "_partition": item.partition,
                    "_offset": item.offset,
                    "_timestamp": item.timestamp_ms,
                }
                line.update(body)
                emit(json.dumps(line, ensure_ascii=False))
            if max_records is not None and count >= max_records:
                break
    if count_only:
        emit(str(count))
    return count


def _read(
    consumer: RecordConsumer,
    ends: Mapping[tuple[str, int], int],
    *,
    until_end: bool,
    timeout_s: float,
) -> Iterator[ConsumedRecord]:
    """The messages ``tail`` reads: with ``until_end`` those below ``ends`` (the end offsets
    found at start), until every partition got there; else until ``timeout_s`` of silence."""
    if not until_end:
        yield from consumer.records(timeout=timeout_s)
        return
    # A partition is done once a message at or past its end is read, or once the consumer
    # reports having caught up with it (the end at start may be a transaction's marker, which
    # no message carries; reaching the end now means reaching the one at start too).
    pending = set(ends)
    while pending:
        item = consumer.poll(0.5)
        pending -= consumer.at_end
        consumer.at_end.clear()
        if item is None:
            continue
        where = (item.topic, item.partition)
        if item.offset >= ends.get(where, 0):
            pending.discard(where)  # written after the start: not ours to print
            continue
        if item.offset + 1 >= ends[where]:
            pending.discard(where)
        yield item


def _body(contract: TopicContract, item: ConsumedRecord) -> dict[str, Any]:
    """The JSON fields of one message read: its record, its heartbeat, or why neither."""
    # Only the prices topic carries heartbeats: elsewhere C3 01 can open a valid record (a
    # Weights timestamp of -98), which must not be mistaken for one.
    if contract.role == "prices" and is_heartbeat(item.value):
        try:
            return {"heartbeat": decode_heartbeat(item.value).to_record()}
        except SchemaError as error:
            return {"_error": str(error), "_value": _jsonable(item.value)}
    if item.record is not None:
        body: dict[str, Any] = _jsonable(item.record)
        return body
    return {"_error": item.error, "_value": _jsonable(item.value)}


@dataclass(frozen=True, slots=True)
class Produced:
    """What ``topic produce`` wrote: how many messages, and how many each partition got (as
    the broker acknowledged them)."""

    topic: str
    count: int
    partitions: Mapping[int, int]

    def line(self) -> str:
        """The report on stderr.

        >>> Produced("Weights", 5, {1: 2, 0: 3}).line()
        'produced 5 message(s) to Weights (partition 0: 3, partition 1: 2)'
        """
        spread = ", ".join(f"partition {p}: {n}" for p, n in sorted(self.partitions.items()))
        return f"produced {self.count} message(s) to {self.topic}" + (
            f" ({spread})" if spread else ""
        )


def produce(settings: Settings, name: str, lines: Iterable[str]) -> int:
    """:func:`produce_lines` from stdin; returns how many messages were produced."""
    return produce_lines(settings, name, lines).count


def produce_lines(
    settings: Settings, name: str, lines: Iterable[str], *, source: str = "stdin"
) -> Produced:
    """Encode JSON lines with topic ``name``'s schema and produce them, keyed per its contract.

    Fields starting with ``_`` (as ``tail`` prints them) are ignored, so tail output can be fed
    back. A line that is not JSON or does not fit the schema stops with an error naming it.
    On the prices topic, ``{"heartbeat": {"time": T, "source": "manual"}}`` produces one
    heartbeat on every partition (Kafka timestamp T, no key), or only on partition N with
    ``"partition": N``. ``source`` names where the lines come from in errors.
    """
    contract: TopicContract = contract_by_name(settings, name)
    codec = codec_for(contract.schema)
    producer = RecordProducer(settings.kafka, component="admin")
    partitions: int | None = None
    count = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"not JSON: {error}", f"{source} line {number}") from None
        if not isinstance(data, dict):
            raise DataError("expected a JSON object", f"{source} line {number}")
        if "heartbeat" in data:
            if partitions is None:
                partitions = (
                    producer.partition_count(contract.name) if contract.role == "prices" else 0
                )
            count += _produce_heartbeat(
                producer, contract, data, partitions, f"{source} line {number}"
            )
            continue
        record = {k: _from_json(v) for k, v in data.items() if not k.startswith("_")}
        try:
            value = codec.encode(record)
        except SchemaError as error:
            raise DataError(
                f"does not fit {contract.schema}: {error.reason}", f"{source} line {number}"
            ) from None
        timestamp = record.get("event_time", record.get("timestamp"))
        producer.send_raw(
            contract.name,
            contract.key_of(record) if contract.key_field in record else None,
            value,
            timestamp_ms=int(timestamp) if isinstance(timestamp, int) else None,
        )
        count += 1
    remaining = producer.flush(60)
    if remaining:
        raise DataError(f"{remaining} message(s) not acknowledged by the broker within 60 s")
    delivered = getattr(producer, "delivered_to", {})
    spread = {p: n for (topic, p), n in delivered.items() if topic == contract.name}
    return Produced(contract.name, count, spread)


def _produce_heartbeat(
    producer: RecordProducer,
    contract: TopicContract,
    data: dict[str, Any],
    partitions: int,
    where: str,
) -> int:
    """Produce the heartbeat of one ``{"heartbeat": {...}[, "partition": N]}`` line."""
    if contract.role != "prices":
        raise DataError(f"heartbeats belong on the prices topic, not {contract.name}", where)
    fields = {k for k in data if not k.startswith("_")}
    if fields - _HEARTBEAT_LINE_KEYS:
        extra = ", ".join(sorted(fields - _HEARTBEAT_LINE_KEYS))
        raise DataError(f"a heartbeat line has only heartbeat and partition, not {extra}", where)
    body = data["heartbeat"]
    if not isinstance(body, dict) or set(body) - {"time", "source"}:
        raise DataError('expected "heartbeat": {"time": epoch ms[, "source": text]}', where)
    try:
        beat = Heartbeat.from_record(body)
    except SchemaError as error:
        raise DataError(f"not a heartbeat: {error.reason}", where) from None
    if partitions <= 0:
        raise DataError(f"topic {contract.name} has no partitions (does it exist?)", where)
    chosen = data.get("partition")
    if chosen is None:
        targets = range(partitions)
    elif isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < partitions:
        raise DataError(
            f"partition must be an integer in 0..{partitions - 1}, got {chosen!r}", where
        )
    else:
        targets = range(chosen, chosen + 1)
    value = encode_heartbeat(beat)
    for partition in targets:
        producer.send_raw(contract.name, None, value, timestamp_ms=beat.time, partition=partition)
    return len(targets)
