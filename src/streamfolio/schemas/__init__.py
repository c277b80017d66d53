"""The Avro schemas of every streamfolio message, shipped as package data.

The ``.avsc`` files next to this module are the single source of truth for what goes on the wire;
:mod:`streamfolio.messages` mirrors them and :mod:`streamfolio.serde` encodes with them.

>>> schema_names()  # doctest: +NORMALIZE_WHITESPACE
['BourseData', 'DeadLetter', 'Heartbeat', 'PortfolioDefinition', 'PortfolioMetrics',
 'PortfolioStats', 'PriceTick', 'RebalanceEvent', 'Weights']
>>> load_schema("PriceTick")["name"]
'io.streamfolio.PriceTick'
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

import fastavro

from streamfolio.errors import SchemaError

__all__ = ["SCHEMA_DIR", "load_schema", "raw_schema", "schema_names", "schema_path"]

SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parent
"""Folder holding the ``.avsc`` files (for tools that want paths; code reads via resources)."""

_SUFFIX: Final = ".avsc"


def _stem(name: str) -> str:
    return name.removesuffix(_SUFFIX)


@cache
def schema_names() -> list[str]:
    """Names of all shipped schemas (file stems), sorted.

    The list is cached: do not mutate it.
    """
    files = resources.files(__name__).iterdir()
    return sorted(_stem(f.name) for f in files if f.name.endswith(_SUFFIX))


def schema_path(name: str) -> Path:
    """Path of the ``.avsc`` file for ``name`` (``"PriceTick"`` or ``"PriceTick.avsc"``).

    >>> schema_path("Weights").name
    'Weights.avsc'
    """
    return SCHEMA_DIR / (_stem(name) + _SUFFIX)


@cache
def _raw_schema_cached(stem: str) -> dict[str, Any]:
    if stem not in schema_names():
        raise SchemaError(f"unknown schema {stem!r}; known: {', '.join(schema_names())}")
    text = resources.files(__name__).joinpath(stem + _SUFFIX).read_text(encoding="utf-8")
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def raw_schema(name: str) -> dict[str, Any]:
    """The schema as written in its ``.avsc`` file (plain JSON, a fresh copy each call).

    Raises :class:`~streamfolio.errors.SchemaError` for an unknown name.

    >>> [f["name"] for f in raw_schema("Weights")["fields"]][:3]
    ['timestamp', 'portfolio_id', 'weights']
    """
    return copy.deepcopy(_raw_schema_cached(_stem(name)))


@cache
def _load_schema_cached(stem: str) -> dict[str, Any]:
    parsed = fastavro.parse_schema(_raw_schema_cached(stem))
    if not isinstance(parsed, dict):  # a record schema always parses to a dict
        raise SchemaError(f"schema {stem!r} is not a record schema")
    return parsed


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``name`` parsed by :func:`fastavro.parse_schema`, cached.

    The same object is returned on every call, so it is parsed once per process; treat it as
    read-only. Logical types are kept (``timestamp-millis`` reads back as ``datetime`` with plain
    fastavro); :class:`streamfolio.serde.AvroCodec` works on the underlying ``long`` instead.

    Raises :class:`~streamfolio.errors.SchemaError` for an unknown name.

    >>> load_schema("Weights") is load_schema("Weights.avsc")
    True
    """
    return _load_schema_cached(_stem(name))
