"""The shipped .avsc files, the codecs, and wire compatibility with the reference project.

Reference bytes are produced here the way the reference's producers produce them: schemaless Avro
binary written with the reference's own .avsc (copied under tests/fixtures/reference_schemas/).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from streamfolio import messages
from streamfolio.config import example_config_path, load_config
from streamfolio.errors import DataError, SchemaError
from streamfolio.portfolios import definition_of
from streamfolio.schemas import (
    SCHEMA_DIR,
    load_schema,
    raw_schema,
    schema_names,
    schema_path,
)
from streamfolio.serde import AvroCodec, codec_for

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_schemas"

ALL = [
    "BourseData",
    "DeadLetter",
    "Heartbeat",
    "PortfolioDefinition",
    "PortfolioMetrics",
    "PortfolioStats",
    "PriceTick",
    "RebalanceEvent",
    "Weights",
]

MESSAGE_CLASSES: dict[str, Any] = {
    "PriceTick": messages.PriceTick,
    "Weights": messages.Weights,
    "PortfolioStats": messages.PortfolioStats,
    "PortfolioMetrics": messages.PortfolioMetrics,
    "RebalanceEvent": messages.RebalanceEvent,
    "DeadLetter": messages.DeadLetter,
    "Heartbeat": messages.Heartbeat,
    "PortfolioDefinition": messages.PortfolioDefinition,
}


def reference_schema(file: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads((REFERENCE / file).read_text(encoding="utf-8"))
    return parsed


def reference_bytes(file: str, record: dict[str, Any]) -> bytes:
    """Bytes as a reference producer writes them (schemaless, with its own schema)."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(reference_schema(file)), record)
    return buffer.getvalue()


def reference_read(file: str, data: bytes) -> dict[str, Any]:
    """What a reference consumer reads from ``data`` with its own schema."""
    schema = fastavro.parse_schema(reference_schema(file))
    record = fastavro.schemaless_reader(io.BytesIO(data), schema, None)
    assert isinstance(record, dict)
    return record


def sample_records() -> dict[str, dict[str, Any]]:
    """One valid record per schema, every field given."""
    tick = messages.PriceTick("ATW", 612.5, 1750427972000, 120.0, "cse", 7)
    stats = messages.PortfolioStats.from_arrays(
        "p1",
        1750427980000,
        ["ATW", "IAM"],
        [1e-4, -2e-4],
        [[4e-4, 1e-4], [1e-4, 9e-4]],
        count=12,
        estimator="ewm",
        half_life_bars=30.0,
        bar_seconds=60,
        kind="updated",
    )
    metrics = messages.PortfolioMetrics(
        "p1", 0.2, 0.1, 0.5, 1750427980000, 12, 1e-4, 1e-5, 252 * 390.0, 0.02, {"ATW": 1.0}, 7, 0.3
    )
    event = messages.RebalanceEvent(
        "p1", 1000, "why", "rebalance", {"ATW": 1.0}, {"ATW": 1.0}, 0.2, 0.6, 0.1, 0.2, 0.0, "ok"
    )
    letter = messages.DeadLetter("late", "d", "t", b"\x00\xff", 5, "job", 1, 2, b"ATW")
    return {
        "BourseData": messages.bourse_from_price_tick(tick),
        "PriceTick": tick.to_record(),
        "Weights": messages.Weights("p1", 1, {"ATW": 0.5, "IAM": 0.5}, "r", "s").to_record(),
        "PortfolioStats": stats.to_record(),
        "PortfolioMetrics": metrics.to_record(),
        "RebalanceEvent": event.to_record(),
        "DeadLetter": letter.to_record(),
        "Heartbeat": messages.Heartbeat(1750427972000, "sim").to_record(),
        "PortfolioDefinition": definition_of(
            load_config(example_config_path(), environ={}).portfolio("banks"), 1750427972000
        ).to_record(),
    }


# --- the schema files -----------------------------------------------------------------------


def test_schema_names_lists_every_file() -> None:
    assert schema_names() == ALL
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc")) == ALL


@pytest.mark.parametrize("name", ALL)
def test_schema_parses_and_documents_every_field(name: str) -> None:
    raw = raw_schema(name)
    assert raw["type"] == "record"
    assert raw.get("doc")
    assert all(f.get("doc") for f in raw["fields"]), [f["name"] for f in raw["fields"]]
    expected_ns = "com.kafmongo.kafmongo.utils" if name == "BourseData" else "io.streamfolio"
    assert raw["namespace"] == expected_ns
    assert load_schema(name)["name"] == f"{expected_ns}.{raw['name']}"
    assert schema_path(name).is_file()


def test_load_schema_is_cached_and_raw_schema_is_a_copy() -> None:
    assert load_schema("PriceTick") is load_schema("PriceTick.avsc")
    raw_schema("PriceTick")["fields"].clear()
    assert raw_schema("PriceTick")["fields"]


def test_unknown_schema_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match=r"unknown schema 'Nope'"):
        load_schema("Nope")
    with pytest.raises(SchemaError):
        codec_for("Nope")


def test_bourse_data_is_the_reference_schema() -> None:
    ours = to_parsing_canonical_form(raw_schema("BourseData"))
    theirs = to_parsing_canonical_form(reference_schema("BourseData.avsc"))
    assert ours == theirs
    assert [f["name"] for f in raw_schema("BourseData")["fields"]] == list(messages.BOURSE_FIELDS)


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        ("Weights", "WeightSchema.avsc"),
        ("Weights", "Weights.avsc"),
        ("PortfolioStats", "KafkaComponent-portfolio_stats.avsc"),
        ("PortfolioStats", "PortfolioStats.avsc"),
        ("PortfolioMetrics", "KafkaComponent-PortfolioMetrics.avsc"),
    ],
)
def test_reference_fields_come_first_and_additions_have_defaults(ours: str, reference: str) -> None:
    our_fields = raw_schema(ours)["fields"]
    ref_fields = reference_schema(reference)["fields"]
    n = len(ref_fields)
    assert [(f["name"], f["type"]) for f in our_fields[:n]] == [
        (f["name"], f["type"]) for f in ref_fields
    ]
    assert all("default" in f for f in our_fields[n:])


def test_event_times_are_timestamp_millis() -> None:
    event_time = next(f for f in raw_schema("PriceTick")["fields"] if f["name"] == "event_time")
    assert event_time["type"] == {"type": "long", "logicalType": "timestamp-millis"}


# --- messages mirror the schemas ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGE_CLASSES))
def test_message_fields_mirror_the_schema(name: str) -> None:
    cls = MESSAGE_CLASSES[name]
    avro_names = [f["name"] for f in raw_schema(name)["fields"]]
    assert [f.name for f in dataclasses.fields(cls)] == list(cls.FIELDS)
    alternatives = getattr(cls, "PACKED_FIELDS", {})  # a second layout of the same attributes
    assert set(alternatives) <= set(cls.FIELDS)
    assert sorted([*cls.FIELDS.values(), *alternatives.values()]) == sorted(avro_names)
    record = sample_records()[name]
    assert list(record) == avro_names  # to_record writes in schema order


# --- codecs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_schema_round_trips(name: str) -> None:
    record = sample_records()[name]
    codec = codec_for(name)
    assert codec.decode(codec.encode(record)) == record
    if name in MESSAGE_CLASSES:
        cls = MESSAGE_CLASSES[name]
        assert cls.from_record(codec.decode(codec.encode(record))).to_record() == record


def test_codec_keeps_timestamps_as_epoch_millis() -> None:
    codec = codec_for("PriceTick")
    decoded = codec.decode(codec.encode(sample_records()["PriceTick"]))
    assert decoded["event_time"] == 1750427972000
    assert type(decoded["event_time"]) is int


def test_codec_bytes_match_plain_fastavro_with_logical_types() -> None:
    """Dropping logical types in the codec does not change a single byte on the wire."""
    record = sample_records()["PriceTick"]
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, load_schema("PriceTick"), record)
    assert codec_for("PriceTick").encode(record) == buffer.getvalue()


def test_omitted_fields_take_their_defaults() -> None:
    codec = codec_for("PriceTick")
    decoded = codec.decode(codec.encode({"ticker": "A", "price": 1.0, "event_time": 0}))
    assert decoded == {
        "ticker": "A",
        "price": 1.0,
        "event_time": 0,
        "volume": None,
        "source": "unknown",
        "sequence": None,
    }


def test_codec_for_is_cached_and_has_a_repr() -> None:
    assert codec_for("Weights") is codec_for("Weights")
    assert repr(codec_for("Weights")) == "AvroCodec('Weights')"
    wire = AvroCodec("Weights", writer_schema=reference_schema("WeightSchema.avsc"))
    assert "WeightSchema" in repr(wire)


# --- reference compatibility ----------------------------------------------------------------


def test_reference_bourse_data_bytes_decode_identically() -> None:
    quote = json.loads((REFERENCE.parent / "bourse_data_atw_local.json").read_text("utf-8"))
    data = reference_bytes("BourseData.avsc", quote)
    assert codec_for("BourseData").decode(data) == quote
    assert codec_for("BourseData").encode(quote) == data
    assert messages.price_tick_from_bourse(codec_for("BourseData").decode(data)).price == 612.5


@pytest.mark.parametrize("file", ["WeightSchema.avsc", "Weights.avsc"])
def test_reference_weights_decode_with_defaults(file: str) -> None:
    record = {"timestamp": 1750547320037, "portfolio_id": "portf1", "weights": {"ATW": 0.3}}
    data = reference_bytes(file, record)
    decoded = AvroCodec("Weights", writer_schema=reference_schema(file)).decode(data)
    assert decoded == {**record, "reason": "", "source": ""}
    assert codec_for("Weights").decode(data, writer_schema=reference_schema(file)) == decoded
    weights = messages.Weights.from_record(decoded)
    assert (weights.portfolio_id, weights.reason) == ("portf1", "")


@pytest.mark.parametrize("file", ["KafkaComponent-portfolio_stats.avsc", "PortfolioStats.avsc"])
def test_reference_stats_decode_with_defaults_and_map_order(file: str) -> None:
    cov = {
        "IAM": {"IAM": 9e-4, "ATW": 1e-4},
        "ATW": {"ATW": 4e-4, "IAM": 1e-4},
    }
    record = {
        "timestamp": 5,
        "portfolio_id": "portf1",
        "meanReturns": {"IAM": 2e-3, "ATW": 1e-3},
        "covarianceMatrix": cov,
    }
    decoded = AvroCodec("PortfolioStats", writer_schema=reference_schema(file)).decode(
        reference_bytes(file, record)
    )
    assert decoded["count"] == 0
    assert decoded["estimator"] == "welford"
    assert decoded["tickers"] == []
    assert decoded["kind"] == "initial"
    stats = messages.PortfolioStats.from_record(decoded)
    assert stats.tickers == ("IAM", "ATW")  # the order of meanReturns
    assert stats.mean == (2e-3, 1e-3)
    assert stats.covariance == ((9e-4, 1e-4), (1e-4, 4e-4))


def test_reference_head_metrics_decode_with_defaults() -> None:
    file = "KafkaComponent-PortfolioMetrics.avsc"
    record = {
        "portfolioId": "portf1",
        "risk": 0.21,
        "expectedReturn": 0.12,
        "sharpRatio": 0.48,
        "timestamp": 9,
    }
    decoded = AvroCodec("PortfolioMetrics", writer_schema=reference_schema(file)).decode(
        reference_bytes(file, record)
    )
    metrics = messages.PortfolioMetrics.from_record(decoded)
    assert (metrics.portfolio_id, metrics.sharpe_ratio, metrics.timestamp) == ("portf1", 0.48, 9)
    assert metrics.weights == {}
    assert metrics.sharpe_threshold is None


def test_old_reference_metrics_layout_is_rejected_up_front() -> None:
    old = reference_schema("KafkaComponent-PortfolioMetrics.old.avsc")
    with pytest.raises(SchemaError, match=r"cannot read .*PortfolioMetrics"):
        AvroCodec("PortfolioMetrics", writer_schema=old)


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("Weights", "WeightSchema.avsc"),
        ("PortfolioStats", "KafkaComponent-portfolio_stats.avsc"),
        ("PortfolioMetrics", "KafkaComponent-PortfolioMetrics.avsc"),
    ],
)
def test_reference_consumers_read_our_bytes(name: str, file: str) -> None:
    """Our records are the reference's with fields appended, so its readers get their prefix."""
    record = sample_records()[name]
    read = reference_read(file, codec_for(name).encode(record))
    assert read == {k: v for k, v in record.items() if k in read}
    assert list(read) == [f["name"] for f in reference_schema(file)["fields"]]


def test_writer_schema_codec_writes_the_reference_layout() -> None:
    file = "WeightSchema.avsc"
    wire = AvroCodec("Weights", writer_schema=reference_schema(file))
    record = sample_records()["Weights"]
    data = wire.encode(record)
    assert data == reference_bytes(
        file, {k: record[k] for k in ("timestamp", "portfolio_id", "weights")}
    )


# --- documented errors ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_truncated_bytes_are_undecodable(name: str) -> None:
    data = codec_for(name).encode(sample_records()[name])
    for cut in (0, 1, len(data) // 2, len(data) - 1):
        with pytest.raises(SchemaError, match=r"^undecodable: "):
            codec_for(name).decode(data[:cut])


def test_garbage_and_non_bytes_are_undecodable() -> None:
    codec = codec_for("PriceTick")
    with pytest.raises(SchemaError, match=r"^undecodable: "):
        codec.decode(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(SchemaError, match=r"^undecodable: UnicodeDecodeError"):
        codec.decode(b"\x04\xff\xfe" + bytes(20))
    with pytest.raises(SchemaError, match=r"^undecodable: expected bytes, got NoneType"):
        codec.decode(None)  # type: ignore[arg-type]


def test_trailing_bytes_are_undecodable_unless_allowed() -> None:
    data = codec_for("PriceTick").encode(sample_records()["PriceTick"]) + b"\x00\x00"
    with pytest.raises(SchemaError, match=r"2 byte\(s\) left after one io.streamfolio.PriceTick"):
        codec_for("PriceTick").decode(data)
    assert AvroCodec("PriceTick", allow_trailing=True).decode(data)["ticker"] == "ATW"


def test_reading_reference_bytes_without_the_writer_schema_fails_loudly() -> None:
    data = reference_bytes(
        "WeightSchema.avsc", {"timestamp": 1, "portfolio_id": "p", "weights": {}}
    )
    with pytest.raises(SchemaError, match=r"^undecodable: "):
        codec_for("Weights").decode(data)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"ticker": "A", "event_time": 1},
            "PriceTick: field 'price' is missing \\(expected double\\)",
        ),
        (
            {"ticker": "A", "price": "x", "event_time": 1},
            "PriceTick: field 'price' expected double, got 'x' \\(str\\)",
        ),
        (
            {"ticker": "A", "price": 1.0, "event_time": 1, "volume": "3"},
            "field 'volume' expected null \\| double",
        ),
        (
            {"ticker": "A", "price": 1.0, "event_time": 1, "pirce": 2.0},
            "more fields than the schema specifies: pirce",
        ),
        (["not", "a", "mapping"], "expected a mapping of field names, got list"),
    ],
)
def test_encode_errors_name_the_field(record: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as info:
        codec_for("PriceTick").encode(record)
    assert isinstance(info.value, DataError)


def test_encode_error_inside_a_map_names_the_field() -> None:
    with pytest.raises(SchemaError, match=r"field 'weights'"):
        codec_for("Weights").encode({"timestamp": 1, "portfolio_id": "p", "weights": {"A": "x"}})


def test_writer_schema_must_be_a_record() -> None:
    with pytest.raises(SchemaError, match=r"expected a record schema"):
        AvroCodec("Weights", writer_schema={"type": "map", "values": "double"})
