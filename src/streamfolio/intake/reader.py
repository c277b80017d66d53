"""The :class:`Intake` of a component: one method per topic, decoding and judging a record,
and :class:`Rejected`, the refusal with its reason and dead letter.

:mod:`streamfolio.intake` describes the three steps a record passes; the portfolio-fit rules
they apply are in :mod:`streamfolio.intake.rules`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, TypeVar

from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.errors import DataError, SchemaError, StreamfolioError
from streamfolio.intake.rules import (
    DEFAULT_COVARIANCE_TOLERANCE,
    DEFAULT_MAX_STATS_COUNT,
    stats_problem,
    weights_problem,
)
from streamfolio.messages import (
    DeadLetter,
    Heartbeat,
    PortfolioMetrics,
    PortfolioStats,
    PriceTick,
    RebalanceEvent,
    Weights,
    price_tick_from_bourse,
)
from streamfolio.serde import codec_for, decode_heartbeat, is_heartbeat

__all__ = [
    "DEFAULT_MAX_FUTURE_SKEW_MS",
    "DETAIL_LIMIT",
    "REASONS",
    "Intake",
    "PriceFormat",
    "Rejected",
]

PriceFormat: TypeAlias = Literal["tick", "bourse"]

REASONS: Final[Mapping[str, str]] = {
    "undecodable": "not a record of the topic's Avro schema",
    "invalid": "breaks its message's own rules (non-finite number, bad price, bad time...)",
    "future": "stamped further ahead of the reader's wall clock than max_future_skew_ms",
    "key_mismatch": "the Kafka key is not the portfolio id in the value",
    "unknown_portfolio": "for a portfolio neither configured nor defined on the portfolios topic",
    "invalid_stats": "initial statistics that do not fit their portfolio",
    "invalid_weights": "weights that do not fit their portfolio",
    "invalid_metrics": "metrics that break their rules or do not fit their portfolio",
    "invalid_event": "a rebalance event that breaks its rules",
    "invalid_definition": "a portfolio definition the configuration's validation refuses",
    "stale": "older than what is in force (a replayed or duplicated record)",
}
"""Every reason :class:`Intake` and the portfolio state give, and what it means (docs/trust.md)."""

DETAIL_LIMIT: Final = 1000
"""Longest ``detail`` a refusal keeps (characters)."""
DEFAULT_MAX_FUTURE_SKEW_MS: Final = 300_000

_M = TypeVar("_M")


class Rejected(StreamfolioError):  # noqa: N818 (a verdict on a record, not a failure)
    """A record a component refuses: ``reason`` (one of :data:`REASONS`) and ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        if len(detail) > DETAIL_LIMIT:  # a huge map's problem must not make a huge dead letter
            detail = detail[: DETAIL_LIMIT - 3] + "..."
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def dead_letter(
        self,
        *,
        source_topic: str,
        payload: bytes,
        component: str,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | None = None,
        now_ms: int | None = None,
    ) -> DeadLetter:
        """The dead-letter record of this refusal (the original bytes and where they came from)."""
        return DeadLetter(
            self.reason,
            self.detail,
            source_topic,
            payload,
            _wall_clock_ms() if now_ms is None else now_ms,
            component,
            partition,
            offset,
            key,
        )


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Intake:
    """The acceptance rules of one component: its portfolios, limits and clock.

    ``portfolios`` None accepts any portfolio id and checks no fit (a tool that reads
    everything); otherwise an id not in it is ``unknown_portfolio``. ``max_future_skew_ms``
    None turns the clock check off (an offline replay of recorded topics).
    """

    portfolios: Mapping[str, PortfolioSpec] | None
    max_future_skew_ms: int | None = DEFAULT_MAX_FUTURE_SKEW_MS
    max_stats_count: int = DEFAULT_MAX_STATS_COUNT
    covariance_tolerance: float = DEFAULT_COVARIANCE_TOLERANCE
    clock: Callable[[], int] = field(default=_wall_clock_ms, compare=False)

    @classmethod
    def from_settings(
        cls, settings: Any, *, clock: Callable[[], int] = _wall_clock_ms, check_time: bool = True
    ) -> Intake:
        """The rules of ``settings`` (a :class:`~streamfolio.config.Settings`)."""
        from streamfolio.portfolios import portfolio_spec

        validation = settings.validation
        return cls(
            {p.id: portfolio_spec(p, settings.exchange) for p in settings.portfolios},
            max_future_skew_ms=validation.max_future_skew_ms if check_time else None,
            max_stats_count=validation.max_stats_count,
            covariance_tolerance=validation.covariance_tolerance,
            clock=clock,
        )

    # -- one method per topic ------------------------------------------------------------------

    def price(
        self,
        value: bytes | None,
        key: bytes | None = None,
        *,
        price_format: PriceFormat = "tick",
        now_ms: int | None = None,
    ) -> PriceTick | Heartbeat:
        """A record of the prices topic: a heartbeat (single-object encoded), else a tick in
        ``price_format`` (``tick``: a ``PriceTick``; ``bourse``: the reference's
        ``BourseData``, converted). ``now_ms`` saves a clock read per record in a batch.

        The key is not checked: the reference's producers key by ticker, and wherever a tick
        lands it is judged by its partition's own order. The streaming job reads the event
        time in the JVM too (``tools/flink/event-time``, the same rules) and refuses a record
        on which the two disagree.
        """
        if value is None:
            raise Rejected("undecodable", "a record with no value")
        clock = self.clock() if now_ms is None else now_ms
        if is_heartbeat(value):
            try:
                heartbeat = decode_heartbeat(value)
            except SchemaError as exc:
                raise Rejected("undecodable", f"heartbeat: {exc}") from None
            self._not_future("heartbeat", heartbeat.time, clock)
            return heartbeat
        if price_format == "bourse":
            tick = self._decode("BourseData", value, price_tick_from_bourse)
        else:
            tick = self._decode("PriceTick", value, PriceTick.from_record)
        self._not_future(f"{tick.ticker} tick", tick.event_time, clock)
        return tick

    def initial_stats(self, value: bytes, key: bytes | None) -> PortfolioStats:
        """Initial statistics for a configured portfolio, fitting it."""
        stats = self._decode("PortfolioStats", value, PortfolioStats.from_record, "invalid_stats")
        self._for_portfolio(stats.portfolio_id, key)
        self._not_future("PortfolioStats", stats.timestamp)
        spec = self._spec(stats.portfolio_id)
        if spec is not None:
            problem = stats_problem(
                spec,
                stats,
                max_count=self.max_stats_count,
                covariance_tolerance=self.covariance_tolerance,
            )
            if problem is not None:
                raise Rejected("invalid_stats", f"{stats.portfolio_id}: {problem}")
        return stats

    def updated_stats(self, value: bytes, key: bytes | None) -> PortfolioStats:
        """Statistics the job emitted: a configured portfolio's tickers, not from the future."""
        stats = self._decode("PortfolioStats", value, PortfolioStats.from_record, "invalid_stats")
        self._for_portfolio(stats.portfolio_id, key)
        self._not_future("PortfolioStats", stats.timestamp)
        spec = self._spec(stats.portfolio_id)
        if spec is not None and set(stats.tickers) != set(spec.tickers):
            raise Rejected(
                "invalid_stats",
                f"{stats.portfolio_id}: tickers {list(stats.tickers)} are not the portfolio's "
                f"{list(spec.tickers)}",
            )
        return stats

    def weights(self, value: bytes, key: bytes | None) -> Weights:
        """Weights for a configured portfolio, within its bounds."""
        weights = self._decode("Weights", value, Weights.from_record, "invalid_weights")
        self._for_portfolio(weights.portfolio_id, key)
        self._not_future("Weights", weights.timestamp)
        self._fits(weights.portfolio_id, weights.weights, "weights")
        return weights

    def metrics(self, value: bytes, key: bytes | None) -> PortfolioMetrics:
        """Metrics the job emitted: for a configured portfolio, of weights that fit it."""
        metrics = self._decode(
            "PortfolioMetrics", value, PortfolioMetrics.from_record, "invalid_metrics"
        )
        self._for_portfolio(metrics.portfolio_id, key)
        self._not_future("PortfolioMetrics", metrics.timestamp)
        self._not_future("PortfolioMetrics.statsTimestamp", metrics.stats_timestamp)
        self._fits(metrics.portfolio_id, metrics.weights, "metrics", "invalid_metrics")
        return metrics

    def rebalance_event(self, value: bytes, key: bytes | None) -> RebalanceEvent:
        """A rebalancer decision for a configured portfolio, not from the future."""
        event = self._decode("RebalanceEvent", value, RebalanceEvent.from_record, "invalid_event")
        self._for_portfolio(event.portfolio_id, key)
        self._not_future("RebalanceEvent", event.timestamp)
        return event

    def dead_letter(self, value: bytes, key: bytes | None = None) -> DeadLetter:
        """A dead letter (any key: the producer's record key, kept as it was)."""
        letter = self._decode("DeadLetter", value, DeadLetter.from_record)
        self._not_future("DeadLetter", letter.timestamp)
        return letter

    def read(self, role: str, value: bytes, key: bytes | None) -> Any:
        """The message of topic ``role`` (a :data:`~streamfolio.kafka.topics.Role` name)."""
        reader = _READERS.get(role)
        if reader is None:  # a bug in the caller: roles are the fixed kafka.topics.Role names
            raise ValueError(f"no intake for topic role {role!r}")
        return reader(self, value, key)

    # -- the rules -----------------------------------------------------------------------------

    def _decode(
        self,
        schema: str,
        value: bytes,
        build: Callable[[Mapping[str, Any]], _M],
        invalid: str = "invalid",
    ) -> _M:
        try:
            record = codec_for(schema).decode(value)
        except SchemaError as exc:
            raise Rejected("undecodable", str(exc)) from None
        try:
            return build(record)
        except DataError as exc:  # a SchemaError, or a BourseData text that does not parse
            raise Rejected(invalid, str(exc)) from None

    def _not_future(self, what: str, timestamp: int, now_ms: int | None = None) -> None:
        if self.max_future_skew_ms is None:
            return
        limit = (self.clock() if now_ms is None else now_ms) + self.max_future_skew_ms
        if timestamp > limit:
            raise Rejected(
                "future",
                f"{what} stamped {timestamp}, more than {self.max_future_skew_ms} ms ahead of "
                f"the wall clock (validation.max_future_skew_ms)",
            )

    def _for_portfolio(self, portfolio_id: str, key: bytes | None) -> None:
        if key != portfolio_id.encode("utf-8"):
            shown = None if key is None else key[:64].decode("utf-8", "replace")
            raise Rejected(
                "key_mismatch", f"key {shown!r} is not the portfolio id {portfolio_id[:64]!r}"
            )
        if self.portfolios is not None and portfolio_id not in self.portfolios:
            raise Rejected(
                "unknown_portfolio", f"portfolio {portfolio_id[:64]!r} is not configured"
            )

    def _spec(self, portfolio_id: str) -> PortfolioSpec | None:
        return None if self.portfolios is None else self.portfolios.get(portfolio_id)

    def _fits(
        self,
        portfolio_id: str,
        weights: Mapping[str, float],
        what: str,
        reason: str = "invalid_weights",
    ) -> None:
        spec = self._spec(portfolio_id)
        if spec is None:
            return
        problem = weights_problem(spec, weights)
        if problem is not None:
            raise Rejected(reason, f"{portfolio_id} {what}: {problem}")


_READERS: Final[Mapping[str, Callable[[Intake, bytes, bytes | None], Any]]] = {
    "prices": Intake.price,
    "initial_stats": Intake.initial_stats,
    "updated_stats": Intake.updated_stats,
    "weights": Intake.weights,
    "metrics": Intake.metrics,
    "rebalance_events": Intake.rebalance_event,
    "dead_letter": Intake.dead_letter,
}
