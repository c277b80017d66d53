"""Which schema and which key each topic carries: the wire contract of the pipeline.

Topic *names* come from configuration (``topics:``); *roles* are fixed. The prices topic can also
carry the reference project's ``BourseData`` records (``flink.price_format: bourse``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streamfolio.config import Settings

Role = Literal[
    "prices",
    "initial_stats",
    "weights",
    "updated_stats",
    "metrics",
    "rebalance_events",
    "dead_letter",
    "portfolios",
]
ROLES: tuple[Role, ...] = (
    "prices",
    "initial_stats",
    "weights",
    "updated_stats",
    "metrics",
    "rebalance_events",
    "dead_letter",
    "portfolios",
)


@dataclass(frozen=True, slots=True)
class TopicContract:
    """A topic's role, name, value schema and the record field that is its key."""

    role: Role
    name: str
    schema: str
    key_field: str | None

    def key_of(self, record: dict[str, Any]) -> bytes | None:
        """The Kafka key of ``record`` (UTF-8), or None for unkeyed topics."""
        if self.key_field is None:
            return None
        return str(record[self.key_field]).encode()


_SCHEMA_AND_KEY: dict[Role, tuple[str, str | None]] = {
    "prices": ("PriceTick", "ticker"),
    "initial_stats": ("PortfolioStats", "portfolio_id"),
    "weights": ("Weights", "portfolio_id"),
    "updated_stats": ("PortfolioStats", "portfolio_id"),
    "metrics": ("PortfolioMetrics", "portfolioId"),
    "rebalance_events": ("RebalanceEvent", "portfolio_id"),
    "dead_letter": ("DeadLetter", None),
    "portfolios": ("PortfolioDefinition", "portfolio_id"),
}


def contract(settings: Settings, role: Role) -> TopicContract:
    """The contract of the topic with this role under ``settings``."""
    schema, key = _SCHEMA_AND_KEY[role]
    if role == "prices" and settings.flink.price_format == "bourse":
        schema = "BourseData"
    return TopicContract(role, getattr(settings.topics, role), schema, key)


def contract_by_name(settings: Settings, name: str) -> TopicContract:
    """The contract of the topic named ``name`` (a configured name or a role)."""
    for role in ROLES:
        if name in (role, getattr(settings.topics, role)):
            return contract(settings, role)
    known = ", ".join(f"{getattr(settings.topics, r)} ({r})" for r in ROLES)
    raise KeyError(f"unknown topic {name!r}; configured topics: {known}")
