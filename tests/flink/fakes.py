"""A minimal in-memory stand-in for Flink's keyed runtime, to drive the job's functions directly.

It reproduces what the functions rely on: keyed value and map state scoped to the current key,
event-time timers that fire in (time, registration) order once the watermark reaches them, and
side outputs as ``(OutputTag, value)`` pairs. :class:`Pipeline` chains the job's functions the
way ``build_pipeline`` does and advances the watermark as the Kafka source would for one
partition: greatest timestamp seen − bound − 1.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from typing import Any

from pyflink.datastream import OutputTag

from streamfolio.config import Settings
from streamfolio.flink import operators as op
from streamfolio.flink.job import routing
from streamfolio.kafka.topics import contract

MIN_WATERMARK = -(2**63)


class _Scoped:
    def __init__(self, runtime: KeyedRuntime, name: str) -> None:
        self._runtime = runtime
        self._name = name

    @property
    def _store(self) -> dict[Any, Any]:
        return self._runtime.stores.setdefault((self._name, self._runtime.current_key), {})


class FakeValueState(_Scoped):
    def value(self) -> Any:
        return self._store.get("value")

    def update(self, value: Any) -> None:
        self._store["value"] = value

    def clear(self) -> None:
        self._store.pop("value", None)


class FakeMapState(_Scoped):
    def get(self, key: Any) -> Any:
        return self._store.get(key)

    def put(self, key: Any, value: Any) -> None:
        self._store[key] = value

    def remove(self, key: Any) -> None:
        self._store.pop(key, None)

    def keys(self) -> Iterable[Any]:
        return list(self._store)


class _TimerService:
    def __init__(self, runtime: KeyedRuntime) -> None:
        self._runtime = runtime

    def current_watermark(self) -> int:
        return self._runtime.watermark

    def register_event_time_timer(self, timestamp: int) -> None:
        self._runtime.register(timestamp)


class _Context:
    def __init__(self, runtime: KeyedRuntime) -> None:
        self._runtime = runtime

    def timer_service(self) -> _TimerService:
        return _TimerService(self._runtime)

    def get_current_key(self) -> Any:
        return self._runtime.current_key


class KeyedRuntime:
    """Runs one keyed function (process, co-process) over records and watermarks."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.stores: dict[tuple[str, Any], dict[Any, Any]] = {}
        self.current_key: Any = None
        self.watermark = MIN_WATERMARK
        self._timers: list[tuple[int, int, Any]] = []
        self._registered: set[tuple[int, Any]] = set()
        self._seq = itertools.count()
        function.open(self)

    # the RuntimeContext methods the functions call in open()
    def get_state(self, descriptor: Any) -> FakeValueState:
        return FakeValueState(self, descriptor.name)

    def get_map_state(self, descriptor: Any) -> FakeMapState:
        return FakeMapState(self, descriptor.name)

    def register(self, timestamp: int) -> None:
        if (timestamp, self.current_key) not in self._registered:  # Flink de-duplicates
            self._registered.add((timestamp, self.current_key))
            heapq.heappush(self._timers, (timestamp, next(self._seq), self.current_key))

    def process(self, key: Any, value: Any, *, input_index: int = 0) -> list[Any]:
        self.current_key = key
        method = {0: "process_element", 1: "process_element1", 2: "process_element2"}
        return list(getattr(self.function, method[input_index])(value, _Context(self)) or ())

    def advance(self, watermark: int) -> list[Any]:
        """Move the watermark forward and fire the timers it reaches, in time order."""
        out: list[Any] = []
        self.watermark = max(self.watermark, watermark)
        while self._timers and self._timers[0][0] <= self.watermark:
            timestamp, _, key = heapq.heappop(self._timers)
            self._registered.discard((timestamp, key))
            self.current_key = key
            out.extend(self.function.on_timer(timestamp, _Context(self)) or ())
        return out


def split(outputs: Iterable[Any]) -> tuple[list[Any], dict[str, list[Any]]]:
    """Main outputs, and side outputs by tag name."""
    main: list[Any] = []
    side: dict[str, list[Any]] = {}
    for item in outputs:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], OutputTag):
            side.setdefault(item[0].tag_id, []).append(item[1])
        else:
            main.append(item)
    return main, side


class Pipeline:
    """The job's functions chained as in ``build_pipeline``, with one watermark for all inputs."""

    def __init__(self, settings: Settings) -> None:
        route = routing(settings)
        self.bound = settings.flink.max_out_of_orderness_ms
        prices = contract(settings, "prices")
        self.decode = op.DecodeTicks(route.bar_sizes, prices.schema, prices.name)
        self.decode.open(None)
        self.decoders = {}
        for role, kind in (("initial_stats", "stats"), ("weights", "weights")):
            c = contract(settings, role)
            self.decoders[kind] = op.DecodeControls(kind, c.schema, list(route.specs), c.name)
            self.decoders[kind].open(None)
        self.bars = KeyedRuntime(op.CloseBars(route.portfolios, prices.name))
        self.portfolios = KeyedRuntime(
            op.PortfolioProcess(
                route.specs,
                {"stats": contract(settings, "initial_stats").name, "weights": "w"},
            )
        )
        self.max_timestamp: int | None = None
        self.stats: list[Any] = []
        self.metrics: list[Any] = []
        self.dead: list[bytes] = []

    def _collect(self, outputs: Iterable[Any]) -> None:
        main, side = split(outputs)
        self.stats.extend(main)
        self.metrics.extend(side.get("metrics", []))
        self.dead.extend(side.get("dead-letters", []))

    def _to_portfolios(self, bar_rows: Iterable[Any]) -> None:
        for row in bar_rows:
            self._collect(self.portfolios.process(op.bar_row_key(row), row, input_index=1))

    def tick(self, value: bytes, timestamp: int) -> None:
        """A prices-topic message with its Kafka timestamp."""
        main, side = split(self.decode.process_element(value))
        self.dead.extend(side.get("dead-letters", []))
        for row in main:
            bar_rows, bar_side = split(self.bars.process(op.tick_key(row), row))
            self.dead.extend(bar_side.get("dead-letters", []))
            self._to_portfolios(bar_rows)
        if self.max_timestamp is None or timestamp > self.max_timestamp:
            self.max_timestamp = timestamp
        self.advance(self.max_timestamp - self.bound - 1)

    def control(self, kind: str, value: bytes) -> None:
        main, side = split(self.decoders[kind].process_element(value))
        self.dead.extend(side.get("dead-letters", []))
        for row in main:
            self._collect(self.portfolios.process(op.control_row_key(row), row, input_index=2))

    def advance(self, watermark: int) -> None:
        bar_rows, side = split(self.bars.advance(watermark))
        self.dead.extend(side.get("dead-letters", []))
        self._to_portfolios(bar_rows)
        self._collect(self.portfolios.advance(watermark))

    def finish(self) -> None:
        """End of a bounded input: the watermark jumps to the end of time."""
        self.advance(2**63 - 1)
