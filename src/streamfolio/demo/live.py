"""The demo's live view: what the pipeline publishes (metrics, rebalance events, dead letters),
folded into one row per portfolio, and each component's state (running, waiting for the
broker, restarting, stopped) with the broker's, shown as tables (or plain lines when not on a
terminal) until ``--duration``, a stop, or a component the supervisor gives up on."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException

from streamfolio.config import Settings
from streamfolio.demo.components import ComponentView, is_reachable
from streamfolio.kafka.clients import RecordConsumer
from streamfolio.kafka.topics import contract
from streamfolio.portfolio_book import DefinitionsFollower, DefinitionsSource, PortfolioBook

if TYPE_CHECKING:
    from streamfolio.demo.supervision import Supervisor

log = logging.getLogger(__name__)


@dataclass
class PortfolioView:
    sharpe: float = math.nan
    expected_return: float = math.nan
    risk: float = math.nan
    threshold: float = math.nan
    bars: int = 0
    as_of: int = 0
    rebalances: int = 0
    last_event: str = ""
    tickers: tuple[str, ...] = ()
    removed: bool = False
    """Removed on the portfolios topic: shown as such, its last figures kept."""


@dataclass
class LiveState:
    portfolios: dict[str, PortfolioView] = field(default_factory=dict)
    dead_letters: int = 0
    started: float = field(default_factory=time.monotonic)
    components: Sequence[ComponentView] = ()
    broker: str = ""
    """What the last probe of the broker said (``reachable``...); empty: not probed."""


def follow_book(state: LiveState, book: PortfolioBook) -> None:
    """Show every portfolio of ``book``: a new one appears with its tickers and threshold
    before its first metrics, a removed one is marked removed.

    >>> from streamfolio.config import example_config_path, load_config
    >>> from streamfolio.kafka.definitions import DefinitionRead
    >>> state, book = LiveState(), PortfolioBook(load_config(example_config_path(), environ={}))
    >>> follow_book(state, book); sorted(state.portfolios), state.portfolios["banks"].tickers
    (['banks', 'portf1'], ('ATW', 'BCP', 'BOA'))
    >>> _ = book.apply(DefinitionRead("banks", 5, None)); follow_book(state, book)
    >>> state.portfolios["banks"].removed
    True
    """
    for pid in book.ids():
        portfolio = book.latest(pid)
        if portfolio is None:  # pragma: no cover - ids() are those in force
            continue
        view = state.portfolios.setdefault(pid, PortfolioView())
        view.tickers = tuple(portfolio.tickers)
        view.threshold = portfolio.policy.sharpe_threshold
        view.removed = False
    for pid in book.removed():
        if pid in state.portfolios:
            state.portfolios[pid].removed = True


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d")


def watch(settings: Settings, state: LiveState, consumer: RecordConsumer, seconds: float) -> None:
    """Fold what the pipeline published in the last ``seconds`` into ``state``."""
    deadline = time.monotonic() + seconds
    metrics_topic = settings.topics.metrics
    events_topic = settings.topics.rebalance_events
    while time.monotonic() < deadline:
        item = consumer.poll(0.2)
        if item is None or item.record is None:
            continue
        record: dict[str, Any] = item.record
        if item.topic == metrics_topic:
            view = state.portfolios.setdefault(record["portfolioId"], PortfolioView())
            view.sharpe = record["sharpRatio"]
            view.expected_return = record["expectedReturn"]
            view.risk = record["risk"]
            view.bars = record["count"]
            view.as_of = record["timestamp"]
            view.threshold = record.get("sharpeThreshold") or math.nan
        elif item.topic == events_topic:
            view = state.portfolios.setdefault(record["portfolio_id"], PortfolioView())
            if record["decision"] == "rebalance":
                view.rebalances += 1
                view.last_event = (
                    f"{_when(record['timestamp'])} rebalanced: Sharpe {record['sharpe_before']:.2f}"
                    f" → {record['sharpe_after']:.2f}, turnover {record['turnover']:.2f}"
                )
            elif record["decision"] == "hold":
                view.last_event = f"{_when(record['timestamp'])} held: {record['reason']}"
        else:
            state.dead_letters += 1


_COLUMNS = (
    "portfolio",
    "as of",
    "Sharpe",
    "threshold",
    "return",
    "risk",
    "bars",
    "rebalances",
    "last decision",
)
_LEFT = ("portfolio", "as of", "last decision")


_STYLES = {
    "running": "green",
    "reachable": "green",
    "finished": "green",
    "waiting for the broker": "yellow",
    "restarting": "yellow",
    "exited": "yellow",
    "stopped": "dim",
    "failed": "bold red",
}


def _style(state: str) -> str:
    """The colour of a state: a cluster with a node down still works, but is worth a look.

    >>> _style("running"), _style("reachable (2 of 3 brokers)"), _style("down (no broker process)")
    ('green', 'yellow', 'red')
    """
    if state in _STYLES:
        return _STYLES[state]
    if state.startswith("reachable ("):
        return "yellow"
    return "red" if state.startswith(("down", "not")) else ""


def _styled(state: str) -> str:
    style = _style(state)
    return f"[{style}]{state}[/{style}]" if style else state


def render_components(components: Sequence[ComponentView], broker: str = "") -> Any:
    """A rich Table: one row per component, and the broker's (when probed)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="components")
    for column in ("component", "state", "", "restarts", "log"):
        table.add_column(column, justify="right" if column == "restarts" else "left")
    if broker:
        table.add_row("broker", _styled(broker), "", "", "")
    for view in components:
        log = escape(str(view.log_path)) if view.log_path is not None else ""
        table.add_row(view.name, _styled(view.state), escape(view.detail), str(view.restarts), log)
    return table


def render(state: LiveState) -> Any:
    """The live state as rich renderables: the portfolios' table, then the components'."""
    from rich.console import Group

    if not state.components and not state.broker:
        return _portfolio_table(state)
    return Group(_portfolio_table(state), render_components(state.components, state.broker))


def _portfolio_table(state: LiveState) -> Any:
    from rich.table import Table

    elapsed = time.monotonic() - state.started
    table = Table(title=f"streamfolio demo: {elapsed:,.0f} s, dead letters {state.dead_letters}")
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column in _LEFT else "right")
    for pid, view in sorted(state.portfolios.items()):
        below = view.sharpe < view.threshold  # False when either is NaN
        sharpe = f"[red]{view.sharpe:.2f}[/red]" if below else f"[green]{view.sharpe:.2f}[/green]"
        table.add_row(
            f"{pid} (removed)" if view.removed else pid,
            _when(view.as_of) if view.as_of else "",
            sharpe,
            f"{view.threshold:.2f}",
            f"{view.expected_return:.1%}",
            f"{view.risk:.1%}",
            str(view.bars),
            str(view.rebalances),
            view.last_event,
        )
    return table


def summary_lines(state: LiveState) -> list[str]:
    """The live state as plain lines, for logs and terminals that are not interactive."""
    elapsed = time.monotonic() - state.started
    lines = [f"[{elapsed:,.0f} s] dead letters {state.dead_letters}"]
    for pid, v in sorted(state.portfolios.items()):
        held = f" [{', '.join(v.tickers)}]" if v.tickers else ""
        lines.append(
            f"  {pid}{' (removed)' if v.removed else ''}{held}: "
            f"{_when(v.as_of) if v.as_of else '-'} Sharpe {v.sharpe:.2f} "
            f"(threshold {v.threshold:.2f}), return {v.expected_return:.1%}, risk {v.risk:.1%}, "
            f"{v.bars} obs, {v.rebalances} rebalance(s); {v.last_event or 'no decision yet'}"
        )
    parts = [f"broker {state.broker}"] if state.broker else []
    parts += [
        f"{c.name} {c.state}" + (f" ({c.detail})" if c.detail and c.state != "running" else "")
        for c in state.components
    ]
    if parts:
        lines.append("  components: " + ", ".join(parts))
    return lines


def live_consumer(settings: Settings) -> RecordConsumer:
    """The view's own reader. The table shows the broker's state: its client's outage and
    librdkafka lines would only garble the table, so they are not printed."""
    from streamfolio.kafka.outage import broker_watch

    broker_watch("demo")
    for name in ("streamfolio.outage", "streamfolio.librdkafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return RecordConsumer(
        settings.kafka,
        [contract(settings, role) for role in ("metrics", "rebalance_events", "dead_letter")],
        component="dashboard",  # a viewer, with the dashboard's read-only principal
        group_id=f"streamfolio-demo-view-{uuid.uuid4().hex[:8]}",
        from_beginning=False,
        assign_all=True,
    )


BROKER_PROBE_EVERY_S = 5.0
"""How often the live view asks whether the broker answers (a bounded TCP connect)."""


def live_view(
    settings: Settings,
    supervisor: Supervisor,
    duration_s: float | None,
    console: Any,
    live_cls: Any,
    broker_probe: Callable[[], str] | None = None,
    consumer_factory: Callable[[Settings], Any] | None = None,
    definitions: DefinitionsSource | None = None,
    book: PortfolioBook | None = None,
) -> int:
    """Show the live state until ``duration_s`` (None: until stopped), checking on the children
    of ``supervisor`` each second (:meth:`Supervisor.check` restarts them); 1 as soon as it
    gives up on one (printing why and its log), else 0. ``live_cls`` is rich's ``Live``, used on
    a terminal; ``broker_probe`` says whether the broker answers (every few seconds).

    The portfolios shown follow the portfolios topic (``definitions`` reading it into ``book``;
    by default a reader of its own, unless ``consumer_factory`` replaces the view's reader)."""
    from rich.markup import escape

    state = LiveState()
    consumer = (consumer_factory or live_consumer)(settings)
    book = book if book is not None else PortfolioBook(settings, resolve_notify=False)
    if definitions is None and consumer_factory is None:
        definitions = _definitions_reader(settings, book)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    interactive = console.is_terminal
    last_probe = -math.inf
    try:
        with (
            live_cls(render(state), console=console, refresh_per_second=2, transient=False)
            if interactive
            else contextlib.nullcontext() as live
        ):
            last_print = 0.0
            while deadline is None or time.monotonic() < deadline:
                watch(settings, state, consumer, 1.0)
                if definitions is not None:
                    definitions.poll_some(1000)
                follow_book(state, book)
                failure = supervisor.check()
                if broker_probe is not None and time.monotonic() - last_probe >= (
                    BROKER_PROBE_EVERY_S
                ):
                    state.broker = broker_probe()
                    supervisor.broker_reachable = is_reachable(state.broker)
                    last_probe = time.monotonic()
                state.components = supervisor.views()
                if failure is not None:
                    if live is not None:
                        live.update(render(state))
                    console.print(
                        f"[red]{escape(failure.message)}: stopping the demo[/red]",
                        soft_wrap=True,
                    )
                    return 1
                if live is not None:
                    live.update(render(state))
                elif time.monotonic() - last_print > 10:
                    for line in summary_lines(state):
                        console.print(line, highlight=False, soft_wrap=True, markup=False)
                    last_print = time.monotonic()
        for line in summary_lines(state):
            console.print(line, highlight=False, soft_wrap=True, markup=False)
    finally:
        consumer.close()
        if definitions is not None:
            definitions.close()
    return 0


def _definitions_reader(settings: Settings, book: PortfolioBook) -> DefinitionsSource | None:
    try:
        reader = DefinitionsFollower(
            settings,
            book,
            component="dashboard",  # the viewer's read-only principal
            group_id=f"streamfolio-demo-view-{uuid.uuid4().hex[:8]}",
        )
    except KafkaException as exc:  # an older deployment without the topic: the configured ones
        log.warning("not following the portfolios topic: %s", exc)
        return None
    return reader
