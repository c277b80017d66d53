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
from collections.abc import Callable, Iterable
from typing import Any

from streamfolio.config import Settings
from streamfolio.errors import DataError, SchemaError
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


def tail(
    settings: Settings,
    name: str,
    *,
    from_beginning: bool,
    max_records: int | None,
    timeout_s: float,
    emit: Callable[[str], None],
) -> int:
    """Print each message of topic ``name`` as one JSON object; returns how many were printed.

    Undecodable messages are printed too, with ``"_error"`` and the raw value in base64.
    Heartbeats on the prices topic print as ``{"heartbeat": {"time": ..., "source": ...}}``.
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
    ) as consumer:
        for item in consumer.records(timeout=timeout_s, max_records=max_records):
            line: dict[str, Any] = {
                "_key": item.key.decode(errors="replace") if item.key is not None else None,
                "_partition": item.partition,
                "_offset": item.offset,
                "_timestamp": item.timestamp_ms,
            }
            line.update(_body(contract, item))
            emit(json.dumps(line, ensure_ascii=False))
            count += 1
    return count


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


def produce(settings: Settings, name: str, lines: Iterable[str]) -> int:
    """Encode JSON lines with topic ``name``'s schema and produce them, keyed per its contract.

    Fields starting with ``_`` (as ``tail`` prints them) are ignored, so tail output can be fed
    back. A line that is not JSON or does not fit the schema stops with an error naming it.
    On the prices topic, ``{"heartbeat": {"time": T, "source": "manual"}}`` produces one
    heartbeat on every partition (Kafka timestamp T, no key), or only on partition N with
    ``"partition": N``. Returns how many messages were produced.
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
            raise DataError(f"not JSON: {error}", f"stdin line {number}") from None
        if not isinstance(data, dict):
            raise DataError("expected a JSON object", f"stdin line {number}")
        if "heartbeat" in data:
            if partitions is None:
                partitions = (
                    producer.partition_count(contract.name) if contract.role == "prices" else 0
                )
            count += _produce_heartbeat(
                producer, contract, data, partitions, f"stdin line {number}"
            )
            continue
        record = {k: _from_json(v) for k, v in data.items() if not k.startswith("_")}
        try:
            value = codec.encode(record)
        except SchemaError as error:
            raise DataError(
                f"does not fit {contract.schema}: {error.reason}", f"stdin line {number}"
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
    return count


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
