"""A minimal in-memory stand-in for Flink's runtime, to drive the job's functions directly.

It reproduces what the functions rely on: keyed value and map state scoped to the current key,
event-time timers that fire in (time, registration) order once the watermark reaches them,
record timestamps, and side outputs as ``(OutputTag, value)`` pairs. :class:`Pipeline` chains
the job's functions the way ``build_pipeline`` does and advances the watermark as the Kafka
source would for one partition: greatest timestamp seen − bound − 1. The SQL windows between
``DecodeTick`` and ``ChainCloses`` are stood in for by :class:`BarWindows` (the core's
``BarCloses``, fired in time order once the watermark passes a bar's last millisecond); the
real ones are checked against the replay by the integration tests.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pyflink.common import Row
from pyflink.datastream import OutputTag

from streamfolio.config import Settings
from streamfolio.core.returns import BarCloses, bar_end_ms, bar_index
from streamfolio.errors import DataError, SchemaError
from streamfolio.flink import operators as op
from streamfolio.flink import prices, records
from streamfolio.flink.bars import ChainCloses, CollectCloses, GatherBars
from streamfolio.flink.definitions import DecodeDefinitions, membership_changes
from streamfolio.flink.job import routing
from streamfolio.intake import Intake
from streamfolio.kafka.topics import contract
from streamfolio.messages import PriceTick, price_tick_from_bourse
from streamfolio.serde import codec_for, decode_heartbeat, is_heartbeat

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

    def items(self) -> Iterable[tuple[Any, Any]]:
        return list(self._store.items())


class _TimerService:
    def __init__(self, runtime: KeyedRuntime) -> None:
        self._runtime = runtime

    def current_watermark(self) -> int:
        return self._runtime.watermark

    def register_event_time_timer(self, timestamp: int) -> None:
        self._runtime.register(timestamp)


class _Context:
    def __init__(self, runtime: KeyedRuntime, timestamp: int | None = None) -> None:
        self._runtime = runtime
        self._timestamp = timestamp

    def timer_service(self) -> _TimerService:
        return _TimerService(self._runtime)

    def timestamp(self) -> int | None:
        return self._timestamp

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

    def process(
        self, key: Any, value: Any, *, input_index: int = 0, timestamp: int | None = None
    ) -> list[Any]:
        self.current_key = key
        method = {0: "process_element", 1: "process_element1", 2: "process_element2"}
        context = _Context(self, timestamp)
        return list(getattr(self.function, method[input_index])(value, context) or ())

    def lose_timers(self) -> None:
        """A restore from a checkpoint that kept the state but none of the timers pending:
        the function starts again with nothing in memory, and only what it registers from
        now on fires (PyFlink's process mode can lose the last timers registered before a
        checkpoint, :func:`streamfolio.flink.bars.due_first`)."""
        self._timers.clear()
        self._registered.clear()
        self.function.open(self)

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


class BarWindows:
    """Stands in for the SQL tumbling windows: each (ticker, bar)'s close, once final."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, int], BarCloses] = {}
        """(bar ms, bar index) → the closes so far of a bar not final yet."""

    def offer(self, ticker: str, event_time: int, price: float, bar_ms: int) -> None:
        k = bar_index(event_time, bar_ms)
        self.open.setdefault((bar_ms, k), BarCloses()).offer(ticker, event_time, price)

    def fire(self, watermark: int) -> Iterator[tuple[int, Row]]:
        """``(bar's last millisecond, Row(ticker, bar_ms, close, None))`` in time order."""
        final = sorted(
            (bar_end_ms(k, bar_ms) - 1, bar_ms, k)
            for bar_ms, k in self.open
            if bar_end_ms(k, bar_ms) - 1 <= watermark
        )
        for last_ms, bar_ms, k in final:
            for ticker, close in self.open.pop((bar_ms, k)).closes.items():
                yield last_ms, Row(ticker, bar_ms, close, None)


def kafka_record_bytes(
    partition: int, offset: int, key: bytes | None, value: bytes | None, timestamp: int = 0
) -> bytes:
    """A record as the job's Java deserializer ``KafkaRecordBytes`` hands it to Python (value
    None: a tombstone)."""
    head = partition.to_bytes(4, "big") + offset.to_bytes(8, "big")
    head += (-1 if key is None else len(key)).to_bytes(4, "big", signed=True) + (key or b"")
    size = (-1 if value is None else len(value)).to_bytes(4, "big", signed=True)
    return head + size + (value or b"") + timestamp.to_bytes(8, "big", signed=True)


class Pipeline:
    """The job's functions chained as in ``build_pipeline``, with one watermark for all inputs."""

    def __init__(self, settings: Settings) -> None:
        route = routing(settings)
        self.bound = settings.flink.max_out_of_orderness_ms
        price_topic = contract(settings, "prices")
        self.decode = prices.DecodeTick(
            route.bar_sizes,
            price_topic.schema,
            price_topic.name,
            max_out_of_orderness_ms=self.bound,
            max_future_skew_ms=settings.validation.max_future_skew_ms,
        )
        self.decode.open(None)
        self.windows = BarWindows()
        self.decoders = {}
        for role, kind in (("initial_stats", "stats"), ("weights", "weights")):
            c = contract(settings, role)
            intake = Intake.from_settings(settings)
            self.decoders[kind] = op.DecodeControls(kind, intake, c.name)
            self.decoders[kind].open(None)
        self.definitions = DecodeDefinitions(settings, contract(settings, "portfolios").name)
        self.definitions.open(None)
        self.bar_sizes = sorted({size for sizes in route.bar_sizes.values() for size in sizes})
        self.chains = KeyedRuntime(ChainCloses())
        self.collect = KeyedRuntime(CollectCloses())
        self.shards = KeyedRuntime(GatherBars(route.members))
        self._portfolio_step = (
            route.specs,
            {"stats": contract(settings, "initial_stats").name, "weights": "w", "definition": "d"},
            settings.flink.stats_every_bars,
            settings.flink.stats_layout,
        )
        self.portfolios = KeyedRuntime(self._new_portfolio_step())
        self.max_timestamp: int | None = None
        self.held: int | None = None
        """The watermark the bars have reached while :meth:`hold` holds the later steps."""
        self.offsets = itertools.count()
        self.control_offsets = itertools.count()
        self.stats: list[Any] = []
        self.metrics: list[Any] = []
        self.dead: list[bytes] = []

    def _new_portfolio_step(self) -> op.PortfolioShards:
        specs, topics, every, layout = self._portfolio_step
        return op.PortfolioShards(specs, topics, stats_every_bars=every, stats_layout=layout)

    def restore(self) -> None:
        """The portfolio step as restored from a checkpoint taken now: a new function (nothing
        in its memory) over the same keyed state and timers."""
        fresh = self._new_portfolio_step()
        fresh.open(self.portfolios)
        self.portfolios.function = fresh

    def hold(self) -> None:
        """Hold the shards' and the portfolio step's watermark where it is, as the control
        messages' watermark does until their tasks have read something or gone idle (at start,
        after a restore); the bars wait for it in those steps' state."""
        self.held = self.portfolios.watermark

    def release(self) -> None:
        """The held watermark catches up with the bars'."""
        watermark, self.held = self.held, None
        if watermark is not None:
            self.advance(watermark)

    def lose_timers(self) -> None:
        """Every keyed step with timers restored from a checkpoint that kept none of them."""
        for runtime in (self.collect, self.shards, self.portfolios):
            runtime.lose_timers()

    def _collect(self, outputs: Iterable[Any]) -> None:
        main, side = split(outputs)
        self.stats.extend(main)
        self.metrics.extend(side.get("metrics", []))
        self.dead.extend(side.get("dead-letters", []))

    def tick(self, value: bytes, timestamp: int, key: bytes | None = None) -> None:
        """A prices-topic message; ``timestamp`` is the event time it states, if any (what
        ``sf_event_time`` gives the job; one partition)."""
        watermark = self.portfolios.watermark
        now_ms = int(time.time() * 1000)
        ahead = timestamp > now_ms + self.decode.max_future_skew_ms
        event_ms = timestamp if _states_a_time(value, self.decode.schema) and not ahead else 0
        if event_ms and (self.max_timestamp is None or event_ms > self.max_timestamp):
            self.max_timestamp = event_ms
        row = self.decode.judge(
            key,
            value,
            event_ms,
            self.max_timestamp or 0,
            None if watermark == MIN_WATERMARK else watermark,
            0,
            next(self.offsets),
            now_ms,
        )
        ticker, price, bar_sizes, letter = row[0], row[1], row[2], row[3]
        if letter is not None:
            self.dead.append(letter)
        for bar_ms in bar_sizes:
            self.windows.offer(ticker, timestamp, price, bar_ms)
        if self.max_timestamp is not None:
            self.advance(self.max_timestamp - self.bound - 1)

    def control(self, kind: str, value: bytes, key: bytes | None = None) -> None:
        """Read one control record, keyed by its portfolio id unless ``key`` is given."""
        if key is None:
            schema = "PortfolioStats" if kind == "stats" else "Weights"
            key = codec_for(schema).decode(value)["portfolio_id"].encode()
        whole = kafka_record_bytes(0, next(self.control_offsets), key, value)
        main, side = split(self.decoders[kind].process_element(whole))
        self.dead.extend(side.get("dead-letters", []))
        for row in main:
            self._collect(self.portfolios.process(records.control_key(row), row, input_index=2))

    def definition(self, key: bytes, value: bytes | None, timestamp: int = 0) -> None:
        """Read one record of the portfolios topic (value None: a tombstone at ``timestamp``)."""
        whole = kafka_record_bytes(0, next(self.control_offsets), key, value, timestamp)
        main, side = split(self.definitions.process_element(whole))
        self.dead.extend(side.get("dead-letters", []))
        for row in main:
            for change in membership_changes(row, self.bar_sizes):
                self.shards.process(records.membership_key(change), change, input_index=2)
            self._collect(self.portfolios.process(records.control_key(row), row, input_index=2))

    def advance(self, watermark: int) -> None:
        for last_ms, row in self.windows.fire(watermark):
            self.chains.watermark = max(self.chains.watermark, watermark)
            chained, side = split(
                self.chains.process(prices.close_key(row), row, timestamp=last_ms)
            )
            self.dead.extend(side.get("dead-letters", []))
            for item in chained:
                self.collect.process(records.bar_size_key(item), item)
        for whole in self.collect.advance(watermark):
            self.shards.process(records.shard_key(whole), whole, input_index=1)
        if self.held is not None:
            self.held = max(self.held, watermark)
            return
        for bar in self.shards.advance(watermark):
            self._collect(self.portfolios.process(records.member_bars_key(bar), bar, input_index=1))
        self._collect(self.portfolios.advance(watermark))

    def finish(self) -> None:
        """End of a bounded input: the watermark jumps to the end of time."""
        self.advance(2**63 - 1)


def _states_a_time(value: bytes, schema: str) -> bool:
    """Whether ``sf_event_time`` would read an event time from ``value`` (a valid tick or
    heartbeat; the future skew aside)."""
    if is_heartbeat(value):
        try:
            decode_heartbeat(value)
        except (SchemaError, DataError):
            return False
        return True
    try:
        record = codec_for(schema).decode(value)
        if schema == "BourseData":
            price_tick_from_bourse(record)
        else:
            PriceTick.from_record(record)
    except (SchemaError, DataError):
        return False
    return True
