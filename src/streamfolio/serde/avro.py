"""The :class:`AvroCodec` of one record type (schemaless Avro binary) and the shared
:func:`codec_for` each shipped schema; :mod:`streamfolio.serde` describes the wire format.

>>> codec_for("Heartbeat").decode(codec_for("Heartbeat").encode({"time": 5}))
{'time': 5, 'source': 'unknown'}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache, lru_cache
from io import BytesIO
from typing import Any, Final

import fastavro
from fastavro.validation import ValidationError, validate

from streamfolio.errors import SchemaError
from streamfolio.schemas import raw_schema

__all__ = ["AvroCodec", "codec_for"]

_REPR_LIMIT: Final = 80


def _strip_logical_types(schema: Any) -> Any:
    """A deep copy of ``schema`` without ``logicalType`` annotations (the encoding is unchanged)."""
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    return schema


def _parse(schema: Mapping[str, Any]) -> dict[str, Any]:
    # A fresh named-schemas dict per schema: the writer's and the reader's records may share a
    # full name with different fields, and must not overwrite each other.
    parsed = fastavro.parse_schema(_strip_logical_types(dict(schema)), {})
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaError(f"expected a record schema, got {_short(schema)}")
    return parsed


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


class AvroCodec:
    """Encode and decode one record type as schemaless Avro binary.

    Parameters
    ----------
    schema_name
        A shipped schema (:func:`streamfolio.schemas.schema_names`): the layout :meth:`decode`
        returns.
    writer_schema
        The schema the bytes on the wire are written with, if it is not ``schema_name`` itself
        (e.g. a reference ``.avsc``, as parsed JSON). :meth:`decode` resolves from it to
        ``schema_name`` (fields it lacks take their defaults), and :meth:`encode` writes it
        (fields it lacks are dropped), so the codec speaks that producer's format.
    allow_trailing
        Accept bytes left over after one record. Off by default: leftovers mean the writer used a
        different schema, which is a mistake to surface rather than a record to half-read.

    Examples
    --------
    >>> codec = AvroCodec("PriceTick")
    >>> data = codec.encode({"ticker": "ATW", "price": 612.5, "event_time": 1750427972000})
    >>> codec.decode(data)  # doctest: +NORMALIZE_WHITESPACE
    {'ticker': 'ATW', 'price': 612.5, 'event_time': 1750427972000, 'volume': None,
     'source': 'unknown', 'sequence': None}
    """

    __slots__ = ("_allow_trailing", "_reader", "_reject_unknown", "_writer", "name")

    def __init__(
        self,
        schema_name: str,
        *,
        writer_schema: Mapping[str, Any] | None = None,
        allow_trailing: bool = False,
    ) -> None:
        ours = _parse(raw_schema(schema_name))
        self.name: str = schema_name.removesuffix(".avsc")
        self._allow_trailing = allow_trailing
        if writer_schema is None:
            self._writer = ours
            self._reader: dict[str, Any] | None = None
            # An unknown key in one of our own records is a typo, not something to drop.
            self._reject_unknown = True
        else:
            self._writer = _parse(writer_schema)
            self._reader = ours
            # Writing another producer's layout drops the fields it does not have, on purpose.
            self._reject_unknown = False
            self._check_resolvable()

    def __repr__(self) -> str:
        via = "" if self._reader is None else f", writer_schema={self._writer['name']!r}"
        return f"AvroCodec({self.name!r}{via})"

    def _check_resolvable(self) -> None:
        # Schema resolution is only checked by fastavro when a record is read; fail at
        # construction instead, by resolving a record made of the writer's zero values.
        try:
            zero = _zero_record(self._writer)
        except _NoProbeError:
            return  # a layout too intricate to fake; resolution is then checked on first read
        probe = BytesIO()
        try:
            fastavro.schemaless_writer(probe, self._writer, zero)
            probe.seek(0)
            fastavro.schemaless_reader(probe, self._writer, self._reader)
        except Exception as exc:
            raise SchemaError(
                f"cannot read {self._writer['name']} as {self.name}: {type(exc).__name__}: {exc}"
            ) from exc

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Schemaless Avro bytes of ``record``.

        Fields with a default may be left out. Raises :class:`~streamfolio.errors.SchemaError`
        naming the offending field if the record does not fit.

        >>> codec_for("Weights").encode({"timestamp": 1, "portfolio_id": "p1"})
        Traceback (most recent call last):
        ...
        streamfolio.errors.SchemaError: Weights: field 'weights' is missing (expected map)
        """
        buffer = BytesIO()
        try:
            fastavro.schemaless_writer(
                buffer, self._writer, record, strict_allow_default=self._reject_unknown
            )
        except Exception as exc:
            # Validation is slow, so it only runs to explain a failure.
            raise SchemaError(self._explain(record, exc)) from exc
        return buffer.getvalue()

    def _explain(self, record: Any, exc: Exception) -> str:
        prefix = f"{self.name}: "
        if not isinstance(record, Mapping):
            return prefix + f"expected a mapping of field names, got {type(record).__name__}"
        try:
            validate(record, self._writer, raise_errors=True)
        except ValidationError as verr:
            return prefix + "; ".join(self._describe(errors) for errors in _by_field(verr.errors))
        except Exception:  # validate itself can trip on odd values; fall back to the writer's view
            pass
        return prefix + f"{type(exc).__name__}: {exc}"

    def _describe(self, errors: list[Any]) -> str:
        field = str(errors[0].field).removeprefix(self._writer["name"] + ".")
        expected = " | ".join(_type_name(e.schema) for e in errors)
        datum = errors[0].datum
        if datum is None:
            return f"field {field!r} is missing (expected {expected})"
        return f"field {field!r} expected {expected}, got {_short(datum)} ({type(datum).__name__})"

    def decode(
        self,
        data: bytes | bytearray | memoryview,
        *,
        writer_schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The record in ``data``, as a dict in our schema's layout.

        ``writer_schema``, if given, is the schema ``data`` was written with (see the class
        docs); the resolving codec for it is built once and cached.

        Raises :class:`~streamfolio.errors.SchemaError` with a reason starting ``undecodable:``
        when the bytes are truncated, garbage, or longer than one record.

        >>> codec_for("PriceTick").decode(b"\\x06ATW")
        Traceback (most recent call last):
        ...
        streamfolio.errors.SchemaError: undecodable: EOFError: ...
        """
        if writer_schema is not None:
            key = json.dumps(writer_schema, sort_keys=True, default=str)
            return _resolving_codec(self.name, key, self._allow_trailing).decode(data)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SchemaError(f"undecodable: expected bytes, got {type(data).__name__}")
        buffer = BytesIO(data)
        try:
            record = fastavro.schemaless_reader(buffer, self._writer, self._reader)
        except Exception as exc:
            raise SchemaError(f"undecodable: {type(exc).__name__}: {exc}") from exc
        if not isinstance(record, dict):  # cannot happen for a record schema; narrows the type
            raise SchemaError(f"undecodable: got {type(record).__name__}, not a record")
        if not self._allow_trailing:
            left = len(data) - buffer.tell()
            if left:
                raise SchemaError(
                    f"undecodable: {left} byte(s) left after one {self._writer['name']} record"
                )
        return record


def _by_field(errors: tuple[Any, ...]) -> list[list[Any]]:
    """fastavro reports a union mismatch once per branch; group those into one complaint."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for error in errors:
        groups.setdefault((str(error.field), id(error.datum)), []).append(error)
    return list(groups.values())


def _type_name(schema: Any) -> str:
    if isinstance(schema, dict):
        return str(schema.get("type", schema))
    if isinstance(schema, list):
        return " | ".join(_type_name(s) for s in schema)
    return str(schema)


class _NoProbeError(Exception):
    """No probe value can be built for a schema (it refers to a named type)."""


def _zero_record(schema: Any) -> Any:
    """A minimal valid value for a parsed schema (used to probe schema resolution)."""
    if isinstance(schema, list):
        return _zero_record(schema[0])
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: _zero_record(f["type"]) for f in schema["fields"]}
        if kind == "map":
            return {}
        if kind == "array":
            return []
        if kind == "enum":
            return schema["symbols"][0]
        if kind == "fixed":
            return bytes(schema["size"])
        return _zero_record(kind)
    zeros: dict[str, Any] = {
        "null": None,
        "boolean": False,
        "int": 0,
        "long": 0,
        "float": 0.0,
        "double": 0.0,
        "bytes": b"",
        "string": "",
    }
    if schema in zeros:
        return zeros[schema]
    raise _NoProbeError(schema)


@lru_cache(maxsize=64)
def _resolving_codec(schema_name: str, writer_json: str, allow_trailing: bool) -> AvroCodec:
    return AvroCodec(
        schema_name, writer_schema=json.loads(writer_json), allow_trailing=allow_trailing
    )


@cache
def codec_for(schema_name: str) -> AvroCodec:
    """The shared :class:`AvroCodec` of a shipped schema (one per process).

    >>> codec_for("PriceTick") is codec_for("PriceTick")
    True
    """
    return AvroCodec(schema_name)
