"""Heartbeats on the wire: Avro single-object encoding, told apart from ticks by their first bytes.

The fingerprint is recomputed here from the Avro specification's definition of CRC-64-AVRO,
independently of fastavro, and checked against the Avro project's published test vectors
(share/test/data/schema-tests.txt), which are Java's signed ``long`` values.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.errors import SchemaError
from streamfolio.messages import Heartbeat, PriceTick, bourse_from_price_tick
from streamfolio.schemas import raw_schema, schema_path
from streamfolio.serde import (
    HEARTBEAT_PREFIX,
    codec_for,
    decode_heartbeat,
    encode_heartbeat,
    heartbeat_fingerprint,
    is_heartbeat,
)

MAX_MS = 253_402_214_399_999
EMPTY = 0xC15D213AA4D7A795  # the spec's EMPTY: the fingerprint of nothing


def rabin64(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it (Java, unsigned here)."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@pytest.mark.parametrize(
    ("canonical", "java_long"),
    [
        ('"null"', 7195948357588979594),
        ('"boolean"', -6970731678124411036),
        ('"int"', 8247732601305521295),
        ('"long"', -3434872931120570953),
        ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    ],
)
def test_reference_rabin_matches_the_avro_test_vectors(canonical: str, java_long: int) -> None:
    assert signed(rabin64(canonical.encode())) == java_long


def test_schema_file_is_the_contract() -> None:
    raw = raw_schema("Heartbeat")
    assert schema_path("Heartbeat").is_file()
    assert raw["name"] == "Heartbeat" and raw["namespace"] == "io.streamfolio"
    assert [f["name"] for f in raw["fields"]] == ["time", "source"]
    assert raw["fields"][0]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert raw["fields"][1]["type"] == "string" and raw["fields"][1]["default"] == "unknown"


def test_prefix_is_marker_and_little_endian_fingerprint_of_the_canonical_form() -> None:
    # The canonical form written out by hand from the spec's rules (full name, no doc, no
    # default, no logicalType), so a change of the schema file that changes it is noticed.
    canonical = (
        '{"name":"io.streamfolio.Heartbeat","type":"record","fields":'
        '[{"name":"time","type":"long"},{"name":"source","type":"string"}]}'
    )
    assert fastavro.schema.to_parsing_canonical_form(raw_schema("Heartbeat")) == canonical
    fp = rabin64(canonical.encode())
    assert HEARTBEAT_PREFIX[:2] == b"\xc3\x01"
    assert HEARTBEAT_PREFIX[2:] == struct.pack("<Q", fp)  # Java: ByteBuffer LITTLE_ENDIAN putLong
    assert len(HEARTBEAT_PREFIX) == 10
    assert heartbeat_fingerprint() == signed(fp) == -5642503054817919311
    assert struct.unpack("<q", HEARTBEAT_PREFIX[2:])[0] == heartbeat_fingerprint()


def test_body_is_plain_avro_of_the_schema() -> None:
    beat = Heartbeat(1750000000000, "sim")
    data = encode_heartbeat(beat)
    assert data.startswith(HEARTBEAT_PREFIX)
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        fastavro.parse_schema(raw_schema("Heartbeat")),
        {
            "time": 1750000000000,
            "source": "sim",
        },
    )
    assert data[10:] == body.getvalue()


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=MAX_MS), st.text(max_size=20))
def test_round_trip(time: int, source: str) -> None:
    beat = Heartbeat(time, source)
    data = encode_heartbeat(beat)
    assert is_heartbeat(data) and is_heartbeat(bytearray(data)) and is_heartbeat(memoryview(data))
    assert decode_heartbeat(data) == beat
    assert decode_heartbeat(memoryview(data)) == beat


def test_default_source_and_record_round_trip() -> None:
    assert Heartbeat(5).source == "unknown"
    assert Heartbeat.from_record({"time": 5}) == Heartbeat(5)
    assert Heartbeat.from_record(Heartbeat(5, "cse").to_record()) == Heartbeat(5, "cse")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((-1,), "Heartbeat.time is not an epoch-millisecond time"),
        ((MAX_MS + 1,), "Heartbeat.time is not an epoch-millisecond time"),
        ((1.5,), "Heartbeat.time must be an integer, got float"),
        ((True,), "Heartbeat.time must be an integer, got bool"),
        ((1, None), "Heartbeat.source must be a string, got NoneType"),
    ],
)
def test_invalid_heartbeats_are_schema_errors(args: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(SchemaError, match=reason):
        Heartbeat(*args)


def test_missing_time_names_the_field() -> None:
    with pytest.raises(SchemaError, match="Heartbeat record has no field 'time'"):
        Heartbeat.from_record({"source": "x"})


GOOD = encode_heartbeat(Heartbeat(1750000000000, "sim"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no Heartbeat prefix"),
        (GOOD[:5], "no Heartbeat prefix"),
        (GOOD[:10], "EOFError"),
        (GOOD[:-1], "EOFError"),
        (GOOD + b"\x00", "1 byte\\(s\\) left after one io.streamfolio.Heartbeat"),
        (b"\xc3\x01" + bytes(8) + GOOD[10:], "another schema \\(fingerprint 0,"),
        (b"\xc3\x02" + GOOD[2:], "no Heartbeat prefix"),
        (HEARTBEAT_PREFIX + b"\x01\x00", "Heartbeat.time is not an epoch-millisecond"),
        (HEARTBEAT_PREFIX + b"\x02\x04\xff\xfe", "UnicodeDecodeError"),
        (codec_for("PriceTick").encode(PriceTick("ATW", 1.0, 0).to_record()), "no Heartbeat"),
    ],
)
def test_malformed_heartbeats_are_undecodable(data: bytes, reason: str) -> None:
    with pytest.raises(SchemaError, match=r"^undecodable: .*" + reason):
        decode_heartbeat(data)


def test_non_bytes_are_undecodable_and_not_heartbeats() -> None:
    with pytest.raises(SchemaError, match=r"^undecodable: expected bytes, got str"):
        decode_heartbeat("C3 01")  # type: ignore[arg-type]
    assert not is_heartbeat("\xc3\x01")  # type: ignore[arg-type]
    assert not is_heartbeat(None)


def test_c3_01_opens_a_negative_string_length() -> None:
    # Why ticks never look like heartbeats: C3 01 is the zig-zag varint 195, i.e. -98.
    raw = 0xC3 & 0x7F | 0x01 << 7
    assert (raw >> 1) ^ -(raw & 1) == -98
    for name in ("PriceTick", "BourseData"):
        with pytest.raises(SchemaError, match=r"^undecodable: "):
            codec_for(name).decode(GOOD)


price_ticks = st.builds(
    PriceTick,
    ticker=st.text(min_size=1, max_size=200),
    price=st.floats(min_value=5e-324, allow_nan=False, allow_infinity=False),
    event_time=st.integers(min_value=0, max_value=MAX_MS),
    volume=st.none() | st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
    source=st.text(max_size=8),
    sequence=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@settings(max_examples=500)
@given(price_ticks)
def test_price_ticks_never_look_like_heartbeats(tick: PriceTick) -> None:
    data = codec_for("PriceTick").encode(tick.to_record())
    assert not is_heartbeat(data)
    assert data[:2] != b"\xc3\x01"
    if tick.ticker.strip():
        bourse = codec_for("BourseData").encode(bourse_from_price_tick(tick))
        assert bourse[:2] != b"\xc3\x01"


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_any_bytes_after_the_prefix_decode_or_raise_schema_error(tail: bytes) -> None:
    try:
        beat = decode_heartbeat(HEARTBEAT_PREFIX + tail)
    except SchemaError as exc:
        assert exc.reason.startswith("undecodable: ")
    else:
        assert encode_heartbeat(beat) == HEARTBEAT_PREFIX + tail


def test_schema_file_is_valid_json_with_docs() -> None:
    raw = json.loads(schema_path("Heartbeat").read_text(encoding="utf-8"))
    assert raw["doc"] and all(f["doc"] for f in raw["fields"])
