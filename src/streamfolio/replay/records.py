"""What the replay reads and emits: price records, portfolios to run, and the events out.

:class:`Tick` and :class:`Heartbeat` (together :data:`PriceRecord`) are the prices topic's
records, decoded; :class:`ReplayPortfolio` is a portfolio with its starting state and policy;
:class:`ReplayEvent` is what the engine emits. :class:`ReplayError` is raised for input the
engine cannot run on (an undeclared partition, initial weights that do not fit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streamfolio.core.policy import PolicySettings
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.errors import DataError

EventKind = Literal["stats", "metrics", "weights", "rebalance", "hold", "dead_letter"]


class ReplayError(DataError, ValueError):
    """The replay's input does not fit its set-up: a record from a partition that was not
    declared, no partitions at all, or initial weights that do not fit their portfolio.

    Also a ``ValueError``, which is what the replay raised for these before.
    """


@dataclass(frozen=True, slots=True)
class Tick:
    """One price observation in event time, and where it was read.

    ``partition`` is the prices topic's partition (0 for a single-partition input such as a tick
    file); ``offset``, when known, its offset there. Both only break ties and locate dead
    letters; neither changes a price.
    """

    event_time_ms: int
    ticker: str
    price: float
    partition: int = 0
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A feed's promise on one partition: nothing older than ``event_time_ms`` follows.

    It moves its partition's watermark like a tick and never makes a close.
    """

    event_time_ms: int
    partition: int = 0
    offset: int | None = None


PriceRecord = Tick | Heartbeat
"""What the prices topic carries, decoded."""


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """Something the engine emitted, in the order it emitted it."""

    kind: EventKind
    key: str
    record: Mapping[str, Any]


@dataclass(slots=True)
class ReplayPortfolio:
    """A portfolio as the engine runs it: its spec, starting state and (optional) policy."""

    spec: PortfolioSpec
    initial_stats: Mapping[str, Any] | None = None
    initial_weights: Mapping[str, float] | None = None
    policy: PolicySettings | None = None


EventSink = Callable[[ReplayEvent], None]
