"""Typed, immutable mirrors of the Avro records in :mod:`streamfolio.schemas`.

Each class has ``to_record()`` (a dict in the schema's field names, ready for
:class:`streamfolio.serde.AvroCodec`) and ``from_record()`` (the reverse, validating values that
Avro cannot express: finite numbers, matching tickers, a symmetric covariance). Every instance is
valid: construction runs the same checks and raises :class:`~streamfolio.errors.SchemaError` with
a reason.

``FIELDS`` maps each attribute to its Avro field name; the wire's reference spellings
(``meanReturns``, ``sharpRatio``...) appear only there and in ``to_record``/``from_record``.

Fields that have a default in the schema may be missing from a record given to ``from_record``.

The reference's ``BourseData`` quote stays a plain ``dict[str, str]``;
:func:`price_tick_from_bourse` and :func:`bourse_from_price_tick` convert.

The package, by concept (import from here; the submodules are its layout):

- :mod:`~streamfolio.messages.prices`: :class:`PriceTick`, :class:`Heartbeat` (the prices topic);
- :mod:`~streamfolio.messages.portfolio`: :class:`Weights`, :class:`PortfolioStats`,
  :class:`PortfolioMetrics`;
- :mod:`~streamfolio.messages.decisions`: :class:`RebalanceEvent`, :class:`DeadLetter`;
- :mod:`~streamfolio.messages.bourse`: the reference's ``BourseData`` and the exchange's text
  formats (:func:`parse_event_time`, :func:`parse_price`);
- :mod:`~streamfolio.messages.checks`: the validation helpers all of them share.

>>> tick = PriceTick("ATW", 612.5, 1750427972000, source="cse")
>>> PriceTick.from_record(tick.to_record()) == tick
True
"""

from __future__ import annotations

from streamfolio.messages.bourse import (
    BOURSE_FIELDS,
    EXCHANGE_TIMEZONE,
    bourse_from_price_tick,
    parse_event_time,
    parse_price,
    price_tick_from_bourse,
)
from streamfolio.messages.checks import SYMMETRY_TOLERANCE
from streamfolio.messages.decisions import DeadLetter, RebalanceEvent
from streamfolio.messages.definitions import PortfolioDefinition
from streamfolio.messages.portfolio import (
    Estimator,
    PortfolioMetrics,
    PortfolioStats,
    StatsKind,
    Weights,
)
from streamfolio.messages.prices import Heartbeat, PriceTick

__all__ = [
    "BOURSE_FIELDS",
    "EXCHANGE_TIMEZONE",
    "SYMMETRY_TOLERANCE",
    "DeadLetter",
    "Estimator",
    "Heartbeat",
    "PortfolioDefinition",
    "PortfolioMetrics",
    "PortfolioStats",
    "PriceTick",
    "RebalanceEvent",
    "StatsKind",
    "Weights",
    "bourse_from_price_tick",
    "parse_event_time",
    "parse_price",
    "price_tick_from_bourse",
]
