"""The demo's live view: what the pipeline publishes (metrics, rebalance events, dead letters),
folded into one row per portfolio and shown as a table (or plain lines when not on a terminal)
until ``--duration``, a stop, or a child that fails."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamfolio.config import Settings
from streamfolio.kafka.clients import RecordConsumer
from streamfolio.kafka.topics import contract

if TYPE_CHECKING:
    from streamfolio.demo.supervision import Supervisor


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


@dataclass
class LiveState:
    portfolios: dict[str, PortfolioView] = field(default_factory=dict)
    dead_letters: int = 0
    started: float = field(default_factory=time.monotonic)


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


def render(state: LiveState) -> Any:
    """A rich Table of the live state."""
    from rich.table import Table

    elapsed = time.monotonic() - state.started
    table = Table(title=f"streamfolio demo: {elapsed:,.0f} s, dead letters {state.dead_letters}")
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column in _LEFT else "right")
    for pid, view in sorted(state.portfolios.items()):
        below = view.sharpe < view.threshold  # False when either is NaN
        sharpe = f"[red]{view.sharpe:.2f}[/red]" if below else f"[green]{view.sharpe:.2f}[/green]"
        table.add_row(
            pid,
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
        lines.append(
            f"  {pid}: {_when(v.as_of) if v.as_of else '-'} Sharpe {v.sharpe:.2f} "
            f"(threshold {v.threshold:.2f}), return {v.expected_return:.1%}, risk {v.risk:.1%}, "
            f"{v.bars} obs, {v.rebalances} rebalance(s); {v.last_event or 'no decision yet'}"
        )
    return lines


def live_consumer(settings: Settings) -> RecordConsumer:
    return RecordConsumer(
        settings.kafka,
        [contract(settings, role) for role in ("metrics", "rebalance_events", "dead_letter")],
        group_id=f"streamfolio-demo-view-{uuid.uuid4().hex[:8]}",
        from_beginning=False,
        assign_all=True,
    )


def live_view(
    settings: Settings,
    supervisor: Supervisor,
    duration_s: float | None,
    console: Any,
    live_cls: Any,
) -> int:
    """Show the live state until ``duration_s`` (None: until stopped); 1 as soon as a child of
    ``supervisor`` fails, else 0. ``live_cls`` is rich's ``Live``, used on a terminal."""
    state = LiveState()
    consumer = live_consumer(settings)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    interactive = console.is_terminal
    try:
        with (
            live_cls(render(state), console=console, refresh_per_second=2, transient=False)
            if interactive
            else contextlib.nullcontext() as live
        ):
            last_print = 0.0
            while deadline is None or time.monotonic() < deadline:
                watch(settings, state, consumer, 1.0)
                failed = supervisor.failed()
                if failed:
                    for child in failed:
                        code = child.process.returncode
                        console.print(
                            f"[red]{child.name} exited ({code}); see {child.log_path}[/red]"
                        )
                    return 1
                if live is not None:
                    live.update(render(state))
                elif time.monotonic() - last_print > 10:
                    for line in summary_lines(state):
                        console.print(line, highlight=False, soft_wrap=True)
                    last_print = time.monotonic()
        for line in summary_lines(state):
            console.print(line, highlight=False, soft_wrap=True)
    finally:
        consumer.close()
    return 0
