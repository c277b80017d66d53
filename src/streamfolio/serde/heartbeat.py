"""Heartbeats on the prices topic: Avro *single-object encoding* of the ``Heartbeat`` record.

Heartbeats (:class:`~streamfolio.messages.Heartbeat`) are the one exception to the plain
encoding: they share the prices topic with ticks, so they carry Avro's *single-object encoding*
(the marker ``C3 01``, the schema's 8-byte CRC-64-AVRO fingerprint, then the body) and any reader
tells them from ticks by their first ten bytes (:func:`is_heartbeat`).
"""

from __future__ import annotations

from typing import Final

from fastavro.schema import fingerprint, to_parsing_canonical_form

from streamfolio.errors import SchemaError
from streamfolio.messages import Heartbeat
from streamfolio.schemas import raw_schema
from streamfolio.serde.avro import codec_for

__all__ = [
    "HEARTBEAT_PREFIX",
    "decode_heartbeat",
    "encode_heartbeat",
    "heartbeat_fingerprint",
    "is_heartbeat",
]

_SINGLE_OBJECT_MARKER: Final = b"\xc3\x01"
"""The Avro spec's two marker bytes that open a single-object encoded value (format version 1)."""


def _single_object_prefix(schema_name: str) -> bytes:
    # The spec's fingerprint is the 64-bit CRC-64-AVRO (Rabin) of the Parsing Canonical Form,
    # written little-endian, as Java's SchemaNormalization.parsingFingerprint64 and
    # BinaryMessageEncoder do. fastavro returns exactly those eight bytes as hex (its
    # rabin_fingerprint is `result.to_bytes(8, "little").hex()`); the tests recompute it from the
    # spec's definition and the Avro project's published test vectors.
    canonical = to_parsing_canonical_form(raw_schema(schema_name))
    digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    if len(digest) != 8:  # cannot happen; guards against a fastavro that changes its output
        raise SchemaError(f"CRC-64-AVRO of {schema_name} is {len(digest)} bytes, not 8")
    return _SINGLE_OBJECT_MARKER + digest


HEARTBEAT_PREFIX: Final[bytes] = _single_object_prefix("Heartbeat")
"""The ten bytes every encoded heartbeat starts with: ``C3 01`` and the schema's fingerprint.

A plain-Avro ``PriceTick`` or ``BourseData`` record can never start with ``C3 01``: its first
field is a string, whose length is a zig-zag varint, and ``C3 01`` reads as the length -98.

>>> HEARTBEAT_PREFIX.hex(" ")
'c3 01 b1 7e 85 ed 5d cd b1 b1'
"""


def heartbeat_fingerprint() -> int:
    """The heartbeat schema's CRC-64-AVRO fingerprint as a signed 64-bit integer.

    This is the number Java's ``SchemaNormalization.parsingFingerprint64`` returns for the
    schema, i.e. what a JVM consumer compares with the ``long`` it reads little-endian from
    bytes 2..9 of a record.

    >>> heartbeat_fingerprint()
    -5642503054817919311
    """
    return int.from_bytes(HEARTBEAT_PREFIX[2:], "little", signed=True)


def encode_heartbeat(heartbeat: Heartbeat) -> bytes:
    """The wire bytes of ``heartbeat``: :data:`HEARTBEAT_PREFIX`, then the Avro binary body.

    >>> data = encode_heartbeat(Heartbeat(1750000000000, "sim"))
    >>> data[len(HEARTBEAT_PREFIX):].hex(" ")
    '80 f0 86 c2 ee 65 06 73 69 6d'
    >>> decode_heartbeat(data)
    Heartbeat(time=1750000000000, source='sim')
    """
    return HEARTBEAT_PREFIX + codec_for("Heartbeat").encode(heartbeat.to_record())


def is_heartbeat(data: bytes | bytearray | memoryview | None) -> bool:
    """Whether ``data`` starts like a heartbeat (a prefix check: it may still be malformed).

    >>> is_heartbeat(encode_heartbeat(Heartbeat(0))), is_heartbeat(b"\\x06ATW"), is_heartbeat(None)
    (True, False, False)
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        return False
    return bytes(data[: len(HEARTBEAT_PREFIX)]) == HEARTBEAT_PREFIX


def decode_heartbeat(data: bytes | bytearray | memoryview) -> Heartbeat:
    """The heartbeat in ``data``.

    Raises :class:`~streamfolio.errors.SchemaError` with a reason starting ``undecodable:``
    when ``data`` lacks the prefix (or names another schema), is truncated, has bytes left
    over, or holds a time outside 1970..9999.

    >>> decode_heartbeat(HEARTBEAT_PREFIX + b"\\x01\\x00")  # time -1, source ""
    Traceback (most recent call last):
    ...
    streamfolio.errors.SchemaError: undecodable: Heartbeat.time is not an epoch-millisecond \
time in 1970..9999: -1
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SchemaError(f"undecodable: expected bytes, got {type(data).__name__}")
    head = bytes(data[: len(HEARTBEAT_PREFIX)])
    if head != HEARTBEAT_PREFIX:
        if head[:2] == _SINGLE_OBJECT_MARKER and len(head) == len(HEARTBEAT_PREFIX):
            found = int.from_bytes(head[2:], "little", signed=True)
            raise SchemaError(
                f"undecodable: single-object encoding of another schema (fingerprint {found}, "
                f"a Heartbeat's is {heartbeat_fingerprint()})"
            )
        raise SchemaError(f"undecodable: no Heartbeat prefix ({HEARTBEAT_PREFIX.hex()})")
    record = codec_for("Heartbeat").decode(memoryview(data)[len(HEARTBEAT_PREFIX) :])
    try:
        return Heartbeat.from_record(record)
    except SchemaError as exc:
        raise SchemaError(f"undecodable: {exc.reason}") from None
