"""What the dashboard keeps, and how far back: topic roles, size bounds and the history window.

Every bound the state applies, so that its memory does not depend on what the topics carry:
:class:`Limits` (points kept per portfolio), :data:`MAX_TICKERS`, :data:`MAX_TEXT` and
:data:`MAX_REASONS`, and the :class:`TimeWindow` of event times shown. A record the intake accepted
but the state does not show is counted under one of :data:`IGNORED_REASONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from streamfolio.errors import UsageError

__all__ = [
    "DEFAULT_WINDOW_MS",
    "IGNORED_REASONS",
    "MAX_REASONS",
    "MAX_TEXT",
    "MAX_TICKERS",
    "ROLES",
    "Ignored",
    "Json",
    "Limits",
    "Role",
    "TimeWindow",
    "clip_text",
]

Role: TypeAlias = Literal[
    "metrics", "updated_stats", "initial_stats", "weights", "rebalance_events", "dead_letter"
]
ROLES: Final[tuple[Role, ...]] = (
    "metrics",
    "updated_stats",
    "initial_stats",
    "weights",
    "rebalance_events",
    "dead_letter",
)
"""The topics whose records the state folds (prices are only counted, never read)."""

Json: TypeAlias = dict[str, Any]

DEFAULT_WINDOW_MS: Final = 3650 * 86_400_000
"""How far back in event time records are shown by default: ten years.

A sanity bound against stamps nobody meant (1970, an unset clock), not a retention policy (that
is :class:`Limits`): the demo starts its simulated market where the bundled history ends, weeks
before now, a replay of history is as old as the history, and a portfolio that has not been
rebalanced for months still shows its weights. ``streamfolio dashboard --window-days`` narrows
it."""
MAX_TICKERS: Final = 512
"""Most tickers a weights, statistics or rebalance record may carry to be shown."""
MAX_TEXT: Final = 200
"""Texts from the topics (reasons, details, sources) are cut to this many characters."""
MAX_REASONS: Final = 64
"""Distinct dead-letter reasons counted one by one; any further one is counted as ``other``."""

Ignored: TypeAlias = Literal["unknown_portfolio", "stale", "out_of_order", "too_large"]
IGNORED_REASONS: Final[tuple[Ignored, ...]] = (
    "unknown_portfolio",
    "stale",
    "out_of_order",
    "too_large",
)
"""Why a record the intake accepted is not shown (counted per reason in the health report,
beside the intake's reasons, :data:`streamfolio.intake.REASONS`, for the records it refused)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How much history is kept per portfolio (and sent to a browser)."""

    metrics: int = 2000
    weights: int = 500
    events: int = 200

    def __post_init__(self) -> None:
        for name in ("metrics", "weights", "events"):
            if getattr(self, name) < 1:
                raise UsageError(f"Limits.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Which event times are shown: ``history_ms`` back.

    A record is ``stale`` if it is stamped before ``now - history_ms`` (``now``: the dashboard's
    wall clock) or before ``newest - history_ms`` (``newest``: the newest record of its kind
    shown for its portfolio). How far ahead a record may be stamped is the intake's rule
    (``validation.max_future_skew_ms``), judged before a record reaches the state.

    >>> w = TimeWindow(history_ms=1000)
    >>> [w.judge(t, now_ms=5000, newest=None) for t in (3999, 4000, 5000)]
    ['stale', None, None]
    >>> w.judge(4500, now_ms=5000, newest=5600)
    'stale'
    """

    history_ms: int = DEFAULT_WINDOW_MS

    def __post_init__(self) -> None:
        if self.history_ms < 1:
            raise UsageError(f"TimeWindow.history_ms must be >= 1, got {self.history_ms}")

    def judge(self, t: int, *, now_ms: int, newest: int | None) -> Ignored | None:
        """``stale`` or None (inside the window)."""
        if t < now_ms - self.history_ms or (newest is not None and t < newest - self.history_ms):
            return "stale"
        return None


def clip_text(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` cut to ``limit`` characters (an ellipsis marks the cut).

    >>> clip_text("abcdef", 4)
    'abc…'
    """
    return value if len(value) <= limit else value[: limit - 1] + "…"
