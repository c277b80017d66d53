"""The offline engine: ticks in event time → bars → statistics → metrics → policy → weights.

The reference implementation of ``SEMANTICS.md`` that the streaming job must match bar for bar.
The public names live here: the engine (:class:`ReplayEngine`, in
:mod:`~streamfolio.replay.engine`, which states the event-time rules), its records in and out
(:class:`Tick`, :class:`Heartbeat`, :class:`ReplayEvent`, :class:`ReplayPortfolio`, in
:mod:`~streamfolio.replay.records`), the bookkeeping of bars and partitions
(:mod:`~streamfolio.replay.clock`), what a portfolio emits after a change
(:mod:`~streamfolio.replay.decisions`), and the helpers that feed it tick-file rows and topic
contents (:func:`ticks_from_rows`, :func:`replay_topic_records`, in
:mod:`~streamfolio.replay.inputs`).
"""

from __future__ import annotations

from streamfolio.intake import ControlKind
from streamfolio.replay.clock import DEFAULT_MAX_FUTURE_SKEW_MS, partition_ids, wall_clock_ms
from streamfolio.replay.engine import ReplayEngine
from streamfolio.replay.inputs import replay_topic_records, ticks_from_rows
from streamfolio.replay.records import (
    EventKind,
    EventSink,
    Heartbeat,
    PriceRecord,
    ReplayError,
    ReplayEvent,
    ReplayPortfolio,
    Tick,
)

__all__ = [
    "DEFAULT_MAX_FUTURE_SKEW_MS",
    "ControlKind",
    "EventKind",
    "EventSink",
    "Heartbeat",
    "PriceRecord",
    "ReplayEngine",
    "ReplayError",
    "ReplayEvent",
    "ReplayPortfolio",
    "Tick",
    "partition_ids",
    "replay_topic_records",
    "ticks_from_rows",
    "wall_clock_ms",
]
