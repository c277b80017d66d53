"""What ``streamfolio feed`` was asked to do: :class:`FeedOptions`, shared by every source.

The command line builds one :class:`FeedOptions`; :func:`~streamfolio.feeds.run.run_feed` picks
the source from it, and each source module (:mod:`~streamfolio.feeds.cse_feed`, the simulator and
replay in :mod:`~streamfolio.feeds.run`) reads the fields that concern it. It lives on its own so
that those modules need not import one another for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

Progress: TypeAlias = Callable[[str], None]
"""Where a feed reports progress, one line at a time (the command line prints to stderr)."""


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """The ``streamfolio feed`` options; each is named after its ``--option`` (see ``--help``)."""

    source: str = "sim"
    rate: float = 20.0
    fast: bool = False
    duration_s: float | None = None
    max_ticks: int | None = None
    price_format: str | None = None
    seed: int = 7
    start: str | None = None
    calibration: str = "reference"
    drift: float = 0.10
    regime_change_after_s: float | None = None
    crash: tuple[str, ...] = ()
    crash_drift: float = -0.8
    speedup: float = 1.0
    out_of_order: float = 0.0
    late: float = 0.0
    prices: Path | None = None
    speed: float = 0.0
    interval_s: float = 2.0
    all_hours: bool = False
    lag_ms: int | None = None
    """cse, heartbeats: T = wall clock minus this (None: ``feed.heartbeat_lag_ms``)."""
