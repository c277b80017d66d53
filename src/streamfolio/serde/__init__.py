"""Schemaless Avro binary encoding of streamfolio's records.

The wire format is the reference project's: plain Avro binary of one record, no container header,
no schema registry, no Confluent magic byte. Reader and writer therefore agree on the schema by
convention: the shipped ``.avsc`` files (:mod:`streamfolio.schemas`).

Codecs work on the wire primitives: a ``timestamp-millis`` field is an ``int`` of epoch
milliseconds, not a ``datetime``. That is what the messages hold, and it skips fastavro's
datetime conversion (slow, and an extra place to lose precision).

Records written by other producers with an older or different layout (e.g. the reference's
``WeightSchema``, which lacks our trailing fields) are read by naming the schema they were written
with, and fastavro's schema resolution fills our defaults:

>>> import json
>>> reference = json.loads('''{"type": "record", "name": "WeightSchema", "fields": [
...   {"name": "timestamp", "type": "long"}, {"name": "portfolio_id", "type": "string"},
...   {"name": "weights", "type": {"type": "map", "values": "double"}}]}''')
>>> wire = AvroCodec("Weights", writer_schema=reference)
>>> data = wire.encode({"timestamp": 1, "portfolio_id": "p1", "weights": {"ATW": 1.0}})
>>> codec_for("Weights").decode(data)
Traceback (most recent call last):
...
streamfolio.errors.SchemaError: undecodable: EOFError: ...
>>> wire.decode(data)
{'timestamp': 1, 'portfolio_id': 'p1', 'weights': {'ATW': 1.0}, 'reason': '', 'source': ''}
>>> codec_for("Weights").decode(data, writer_schema=reference) == wire.decode(data)
True

Heartbeats (:class:`~streamfolio.messages.Heartbeat`) are the one exception to the plain
encoding: they carry Avro's single-object encoding (:mod:`streamfolio.serde.heartbeat`).

The package: :mod:`~streamfolio.serde.avro` (:class:`AvroCodec`, :func:`codec_for`) and
:mod:`~streamfolio.serde.heartbeat` (:data:`HEARTBEAT_PREFIX`, :func:`encode_heartbeat`,
:func:`decode_heartbeat`, :func:`is_heartbeat`, :func:`heartbeat_fingerprint`); import from here.
"""

from __future__ import annotations

from streamfolio.serde.avro import AvroCodec, codec_for
from streamfolio.serde.heartbeat import (
    HEARTBEAT_PREFIX,
    decode_heartbeat,
    encode_heartbeat,
    heartbeat_fingerprint,
    is_heartbeat,
)

__all__ = [
    "HEARTBEAT_PREFIX",
    "AvroCodec",
    "codec_for",
    "decode_heartbeat",
    "encode_heartbeat",
    "heartbeat_fingerprint",
    "is_heartbeat",
]
