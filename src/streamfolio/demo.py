"""``streamfolio demo``: the whole loop on this machine, and a live view of it.

Starts (and on Ctrl-C or ``--duration`` stops, leaving nothing running) the local Kafka broker,
publishes the example portfolios' initial state, then runs the streaming job, the simulator feed,
the rebalancer, the history store and the dashboard as child processes, and shows a live table
per portfolio: Sharpe against its threshold, expected return, risk, last rebalance.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamfolio.config import Settings
from streamfolio.kafka.clients import RecordConsumer
from streamfolio.kafka.topics import contract

Progress = Callable[[str], None]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


class Supervisor:
    """Runs child processes in their own sessions with logs to files; stops them all cleanly."""

    def __init__(self, log_dir: Path, progress: Progress) -> None:
        self.log_dir = log_dir
        self.progress = progress
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        handle = log_path.open("wb")
        process = subprocess.Popen(
            list(argv),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            # Own session: a terminal Ctrl-C reaches only the demo, which stops children in order.
            start_new_session=True,
        )
        handle.close()
        child = Child(name, process, log_path)
        self.children.append(child)
        self.progress(f"started {name} (pid {process.pid}), log {log_path}")
        return child

    def failed(self) -> list[Child]:
        return [c for c in self.children if c.process.poll() not in (None, 0)]

    def _any_running(self) -> bool:
        return any(c.process.poll() is None for c in self.children)

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGINT, then SIGTERM, then SIGKILL, newest first, waiting for each step."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                self.progress(f"stopping {child.name}")
                _signal_group(child.process, signal.SIGINT)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._any_running():
                time.sleep(0.2)
            for child in self.children:
                if child.process.poll() is None:
                    _signal_group(child.process, sig)
        for child in self.children:
            child.process.wait(timeout=10)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


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
            else:
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


def live_consumer(settings: Settings) -> RecordConsumer:
    return RecordConsumer(
        settings.kafka,
        [contract(settings, role) for role in ("metrics", "rebalance_events", "dead_letter")],
        group_id=f"streamfolio-demo-view-{uuid.uuid4().hex[:8]}",
        from_beginning=False,
        assign_all=True,
    )


def python_command(*args: str) -> list[str]:
    """Run a streamfolio subcommand with this interpreter (works without the venv on PATH)."""
    return [sys.executable, "-m", "streamfolio.cli", *args]
