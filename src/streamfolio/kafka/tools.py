"""``streamfolio topic tail`` and ``topic produce``: look inside the pipeline as JSON lines."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from streamfolio.config import Settings
from streamfolio.errors import DataError, SchemaError
from streamfolio.kafka.clients import RecordConsumer, RecordProducer
from streamfolio.kafka.topics import TopicContract, contract_by_name
from streamfolio.serde import codec_for


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
    """
    contract = contract_by_name(settings, name)
    count = 0
    with RecordConsumer(
        settings.kafka,
        [contract],
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
            if item.record is not None:
                line.update(_jsonable(item.record))
            else:
                line["_error"] = item.error
                line["_value"] = _jsonable(item.value)
            emit(json.dumps(line, ensure_ascii=False))
            count += 1
    return count


def produce(settings: Settings, name: str, lines: Iterable[str]) -> int:
    """Encode JSON lines with topic ``name``'s schema and produce them, keyed per its contract.

    Fields starting with ``_`` (as ``tail`` prints them) are ignored, so tail output can be fed
    back. A line that is not JSON or does not fit the schema stops with an error naming it.
    """
    contract: TopicContract = contract_by_name(settings, name)
    codec = codec_for(contract.schema)
    producer = RecordProducer(settings.kafka)
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
