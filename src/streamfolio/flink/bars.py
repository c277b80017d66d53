"""From bar closes to per-portfolio bars: the job's Python functions that run once per bar.

* :class:`ChainCloses` (keyed by ``TICKER|bar_ms``) chains a ticker's closes into log returns,
  one :class:`~streamfolio.flink.records.TickerClose` each;
* :class:`CollectCloses` (keyed by bar size) collects a bar's closes and returns of every ticker
  and, once the watermark passes the bar's end, sends the whole bar to every portfolio shard of
  the bar size (:class:`~streamfolio.flink.records.ShardBar`);
* :class:`GatherBars` (keyed by shard ``bar_ms|n``) sends the bar once to the portfolio step's
  shard ``n`` with the portfolios that are its members then
  (:class:`~streamfolio.flink.records.MemberBars`).

A shard is a fixed slice of the portfolios (:func:`~streamfolio.flink.routing.shard_of`), so a
bar costs one record per ticker and two per shard, not one per (ticker, portfolio holding it)
nor one per portfolio (the portfolio step updates a shard's portfolios in one numpy step,
:class:`~streamfolio.flink.operators.PortfolioShards`). Which portfolios a shard holds is
data: the configured ones, changed by the definitions read from the portfolios topic
(:class:`~streamfolio.flink.records.MembershipChange`) in event time, each from its
definition's time on. (Before issue #15's scale work each ticker's close went to every shard,
tickers ×
shards records a bar, each rewriting the shard's whole open bar in state: with 500 tickers that
was the job's largest cost, BENCHMARKS.md.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from pyflink.common import Row, Types
from pyflink.datastream import KeyedCoProcessFunction, KeyedProcessFunction
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from streamfolio.core.returns import ReturnChain, bar_end_ms, bar_index
from streamfolio.flink.dead_letters import dead_letter_tag
from streamfolio.flink.records import MemberBars, MembershipChange, ShardBar, TickerClose
from streamfolio.flink.routing import PORTFOLIO_SHARDS
from streamfolio.flink.state import OpenBar, dump_open_bar, load_open_bar, state_type

__all__ = ["ChainCloses", "CollectCloses", "GatherBars", "due_first"]

T = TypeVar("T")


class ChainCloses(KeyedProcessFunction):  # type: ignore[misc]
    """Per (ticker, bar size): each bar's close → its log return (SEMANTICS §3).

    Input: rows of the bar-closes table ``(ticker, bar_ms, close, dead_letter, bar time)``,
    whose record timestamp is the bar's last millisecond. The windows emit a ticker's bars in
    time order, so the chain needs no buffering. Dead letters of the SQL stage (key
    :data:`~streamfolio.flink.dead_letters.DEAD_LETTER_KEY`) go to the side output.
    """

    def open(self, runtime_context: Any) -> None:
        self._last_close = runtime_context.get_state(
            ValueStateDescriptor("last_close", Types.DOUBLE())
        )

    def process_element(self, value: Row, ctx: Any) -> Iterator[Any]:
        ticker, bar_ms, close, dead_letter = value[0], value[1], value[2], value[3]
        if ticker is None:  # refused by DecodeTick (logged and counted there)
            yield dead_letter_tag(), dead_letter
            return
        k = bar_index(ctx.timestamp(), bar_ms)
        log_return = ReturnChain(self._last_close.value()).update(close)
        self._last_close.update(close)
        yield TickerClose(bar_ms, ticker, k, close, log_return)


class CollectCloses(KeyedProcessFunction):  # type: ignore[misc]
    """Per bar size: every ticker's close and return of a bar → the whole bar, to each shard.

    Input: :class:`TickerClose`. Each is kept in map state under ``k|ticker`` (a small value
    per ticker, not the growing bar rewritten per ticker); an event-time timer at the bar's
    last millisecond sends one :class:`ShardBar` per shard of the bar size (with any earlier
    bar still due, :func:`due_first`): which shards hold
    which tickers changes as portfolios are defined. Every ticker's close of bar k is emitted
    by the windows before the watermark that passes bar k, so it is here before the timer.
    """

    def __init__(self, shards: int = PORTFOLIO_SHARDS) -> None:
        self.shards = shards

    def open(self, runtime_context: Any) -> None:
        self._closes = runtime_context.get_map_state(
            MapStateDescriptor("closes", Types.STRING(), state_type())
        )
        self._timers: set[int] = set()
        """Bars whose timer this process registered (Flink de-duplicates the others)."""

    def process_element(self, value: TickerClose, ctx: Any) -> Iterator[ShardBar]:
        k = value.bar
        returns = {} if value.log_return is None else {value.ticker: value.log_return}
        self._closes.put(
            f"{k}|{value.ticker}", dump_open_bar(({value.ticker: value.close}, returns))
        )
        if k not in self._timers:
            ctx.timer_service().register_event_time_timer(bar_end_ms(k, value.bar_ms) - 1)
            self._timers.add(k)
        return iter(())

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[ShardBar]:
        bar_ms = int(ctx.get_current_key())
        # Every bar of the key due by now, oldest first (:func:`due_first`). One pass over the
        # map state: each entry read crosses into the JVM once.
        entries: dict[int, list[tuple[str, Any]]] = {}
        for key, data in self._closes.items():
            entries.setdefault(int(key.partition("|")[0]), []).append((key, data))
        for k, mine in due_first(entries.items(), bar_index(timestamp, bar_ms)):
            self._timers.discard(k)
            closes: dict[str, float] = {}
            returns: dict[str, float] = {}
            for key, data in sorted(mine, key=_ticker_of):
                close, log_return = load_open_bar(data)
                closes.update(close)
                returns.update(log_return)
                self._closes.remove(key)
            if closes:
                for n in range(self.shards):
                    yield ShardBar(f"{bar_ms}|{n}", k, closes, returns)


class GatherBars(KeyedCoProcessFunction):  # type: ignore[misc]
    """Per shard: one bar's closes and returns → one :class:`MemberBars` for its members.

    Input 1: :class:`ShardBar`; input 2: :class:`MembershipChange`. An event-time timer at
    the bar's last millisecond sends the bar (with any earlier one still due, :func:`due_first`)
    to the portfolio step, with the members and their tickers after the membership changes
    stamped at or before its end. A change whose time the watermark has passed applies on
    arrival. :class:`CollectCloses` sends bar k before the watermark that passes it, so it is
    here before the timer fires.
    """

    def __init__(self, portfolios: Mapping[str, Mapping[str, Sequence[str]]]) -> None:
        self.portfolios = {
            shard: {pid: tuple(tickers) for pid, tickers in members.items()}
            for shard, members in portfolios.items()
        }

    def open(self, runtime_context: Any) -> None:
        self._open_bars = runtime_context.get_map_state(
            MapStateDescriptor("open_bars", Types.LONG(), state_type())
        )
        # {"changed": {pid: tickers | None}, "pending": [[T, seq, pid, tickers | None]...]}
        self._membership = runtime_context.get_state(
            ValueStateDescriptor("membership", state_type())
        )

    def process_element1(self, value: ShardBar, ctx: Any) -> Iterator[MemberBars]:
        k = value.bar
        data = self._open_bars.get(k)
        if data is None:
            bar: OpenBar = ({}, {})
            bar_ms = int(value.shard.partition("|")[0])
            ctx.timer_service().register_event_time_timer(bar_end_ms(k, bar_ms) - 1)
        else:
            bar = load_open_bar(data)
        bar[0].update(value.closes)
        bar[1].update(value.returns)
        self._open_bars.put(k, dump_open_bar(bar))
        return iter(())

    def process_element2(self, value: MembershipChange, ctx: Any) -> Iterator[MemberBars]:
        membership = self._load()
        tickers = None if value.tickers is None else list(value.tickers)
        membership["seq"] = membership.get("seq", 0) + 1  # ties: in the order read
        membership["pending"].append(
            [value.timestamp, membership["seq"], value.portfolio_id, tickers]
        )
        self._apply(membership, ctx.timer_service().current_watermark())
        self._membership.update(json.dumps(membership))
        return iter(())

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[MemberBars]:
        shard = ctx.get_current_key()
        size, _, n = shard.partition("|")
        bar_ms = int(size)
        membership = self._load()
        changes = len(membership["pending"])
        # Every bar of the shard due by now, oldest first, each with the members of its time.
        for k, data in due_first(self._open_bars.items(), bar_index(timestamp, bar_ms)):
            self._open_bars.remove(k)
            self._apply(membership, bar_end_ms(k, bar_ms) - 1)
            members = dict(self.portfolios.get(shard, {}))
            for portfolio_id, tickers in membership["changed"].items():
                if tickers is None:
                    members.pop(portfolio_id, None)
                else:
                    members[portfolio_id] = tuple(tickers)
            if members:
                closes, returns = load_open_bar(data)
                yield MemberBars(n, bar_ms, k, closes, returns, members)
        self._apply(membership, timestamp)
        if len(membership["pending"]) != changes:
            self._membership.update(json.dumps(membership))

    def _load(self) -> dict[str, Any]:
        data = self._membership.value()
        return {"changed": {}, "pending": []} if data is None else dict(json.loads(data))

    @staticmethod
    def _apply(membership: dict[str, Any], up_to: float) -> None:
        """Apply the pending changes stamped at or before ``up_to``, in time order."""
        pending = sorted(membership["pending"], key=lambda e: (e[0], e[1]))
        due = [e for e in pending if e[0] <= up_to]
        for _, _, portfolio_id, tickers in due:
            membership["changed"][portfolio_id] = tickers
        membership["pending"] = [e for e in pending if e[0] > up_to]


def _ticker_of(entry: tuple[str, Any]) -> str:
    """Sort key of ``(k|ticker, data)`` map entries: the ticker (a bar's tickers in a fixed
    order, whatever order the map state iterates in).

    >>> sorted([("7|B", 1), ("7|A", 2)], key=_ticker_of)
    [('7|A', 2), ('7|B', 1)]
    """
    return entry[0].partition("|")[2]


def due_first(bars: Iterable[tuple[int, T]], last: int) -> list[tuple[int, T]]:
    """The entries of ``bars`` (keyed by bar index) due by bar ``last``, oldest first.

    Why an event-time timer processes every bar of its key that is due, not just its own: in
    PyFlink's process mode a timer registered from Python reaches the timer service through
    the task's mailbox, after the bundle that registered it, and a checkpoint taken in between
    keeps the state written with the timer but not the timer itself (PyFlink 2.2.1: its
    ``prepareSnapshotPreBarrier`` finishes the bundle without draining those registrations;
    ``advanceWatermark`` does drain them). Restored from such a checkpoint, a bar would wait in
    state for a timer that never fires. Taken with the next timer of its key, it keeps its
    place in the order. (Found by ``test_event_time``'s kill-and-resume case, which lost every
    bar gathered in the last bundle before the checkpoint it resumed from.)

    >>> due_first([(7, "b"), (5, "a"), (9, "c")], 8)
    [(5, 'a'), (7, 'b')]
    """
    return sorted((entry for entry in bars if entry[0] <= last), key=lambda entry: entry[0])
