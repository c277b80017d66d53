"""What a portfolio is, as a message: :class:`PortfolioDefinition` (schema
``PortfolioDefinition``, the compacted ``portfolios`` topic).

The record is a ``portfolios`` entry of the configuration with every default filled in, plus the
event time it takes effect. This class checks what a record of any producer must hold (an id, a
time, tickers); whether the values make a portfolio (bounds that leave room for weights, a bar
size the job computes...) is the configuration's own validation, applied by
:func:`streamfolio.portfolios.portfolio_of`, so a definition read from the topic is refused with
the same messages as the same entry in a file.

>>> d = PortfolioDefinition(5, "p", ("ATW", "IAM"), 60)
>>> d.parameters["tickers"], d.parameters["bar_seconds"]
(['ATW', 'IAM'], 60)
>>> PortfolioDefinition.from_record(d.to_record()) == d
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from streamfolio.messages.checks import (
    check_int,
    check_number,
    check_text,
    check_timestamp,
    fail,
    missing_field,
    set_field,
)

__all__ = ["PortfolioDefinition"]


@dataclass(frozen=True, slots=True)
class PortfolioDefinition:
    """A portfolio's definition from ``timestamp`` (epoch ms, event time) on.

    The nested parts (``estimator``, ``bounds``, ``policy``, ``objective``) stay mappings in the
    configuration's spelling; :attr:`parameters` is the whole entry as the configuration
    writes it.
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        name: name
        for name in (
            "timestamp",
            "portfolio_id",
            "tickers",
            "bar_seconds",
            "owner",
            "risk_free_rate",
            "periods_per_year",
            "estimator",
            "prior_count",
            "bounds",
            "gamma",
            "policy",
            "objective",
            "notify",
        )
    }

    timestamp: int
    portfolio_id: str
    tickers: tuple[str, ...]
    bar_seconds: int
    owner: str | None = None
    risk_free_rate: float = 0.025
    periods_per_year: float | None = None
    estimator: Mapping[str, Any] = field(default_factory=lambda: {"kind": "welford"})
    prior_count: int | None = None
    bounds: Mapping[str, Any] = field(default_factory=lambda: {"min": 0.0, "max": 1.0})
    gamma: float = 0.1
    policy: Mapping[str, Any] = field(default_factory=dict)
    objective: Mapping[str, Any] = field(default_factory=lambda: {"kind": "max_sharpe"})
    notify: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = "PortfolioDefinition"
        check_timestamp(f"{where}.timestamp", self.timestamp)
        check_text(f"{where}.portfolio_id", self.portfolio_id, empty=False)
        if isinstance(self.tickers, str) or not isinstance(self.tickers, list | tuple):
            fail(f"{where}.tickers", "must be a list of tickers")
        set_field(self, "tickers", tuple(self.tickers))
        for ticker in self.tickers:
            check_text(f"{where}.tickers", ticker, empty=False)
        check_int(f"{where}.bar_seconds", self.bar_seconds, minimum=1)
        check_number(f"{where}.risk_free_rate", self.risk_free_rate)
        check_number(f"{where}.gamma", self.gamma)
        for name in ("estimator", "bounds", "policy", "objective"):
            if not isinstance(getattr(self, name), Mapping):
                fail(f"{where}.{name}", "must be a mapping")
        set_field(self, "notify", tuple(self.notify))

    @property
    def parameters(self) -> dict[str, Any]:
        """The definition as a ``portfolios`` entry of the configuration, without its id."""
        entry = {f.name: getattr(self, f.name) for f in fields(self)}
        del entry["timestamp"], entry["portfolio_id"]
        entry["tickers"] = list(self.tickers)
        entry["notify"] = list(self.notify)
        return entry

    def to_record(self) -> dict[str, Any]:
        """The Avro record (the schema's field names, in its order)."""
        record = {name: getattr(self, name) for name in self.FIELDS}
        record["tickers"] = list(self.tickers)
        record["notify"] = list(self.notify)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Read a decoded record; raises :class:`~streamfolio.errors.SchemaError` with the
        reason when a field is missing or malformed."""
        try:
            values = {name: record[name] for name in ("timestamp", "portfolio_id", "tickers")}
            values["bar_seconds"] = record["bar_seconds"]
        except KeyError as exc:
            raise missing_field(cls, exc) from None
        optional = {name: record[name] for name in cls.FIELDS if name in record}
        return cls(**{**optional, **values})
