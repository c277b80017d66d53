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


def python_command(*args: str) -> list[str]:
    """Run a streamfolio subcommand with this interpreter (works without the venv on PATH)."""
    return [sys.executable, "-m", "streamfolio.cli", *args]


@dataclass(frozen=True)
class DemoOptions:
    config_path: Path
    duration_s: float | None = None
    source: str = "sim"
    prices: Path | None = None
    speed: float = 0.0
    seed: int = 7
    dashboard_port: int = 8050
    keep_topics: bool = False
    log_dir: Path = Path(".cache/demo")


SIM_ARGS = (
    # One trading day every two seconds, calibrated on the real CSE history; after 90 s (about
    # 45 simulated days) the three banks sell off, which pushes portf1 below its threshold.
    # The simulated clock starts where the history ends (sim_start_ms), so it soon runs ahead
    # of the wall clock: demo.yaml's validation.max_future_skew_ms accepts that.
    "--rate",
    "22",
    "--speedup",
    "43200",
    "--calibration",
    "history",
    "--drift",
    "0.6",
    "--regime-change-after",
    "90",
    "--crash",
    "ATW,BCP,BOA",
    "--crash-drift",
    "-3",
)


def sim_start_ms(state: dict[str, Any]) -> int:
    """Where the simulated market starts: the end of the history the initial state comes from.

    The initial statistics and weights are stamped with the history's last close and take
    effect at that event time, so the simulator's first bar comes after them; and its prices
    start from those closes. Starting there, rather than at the wall clock, keeps the first
    minutes of the demo in the past.

    >>> sim_start_ms({"portfolios": [{"stats": {"timestamp": 5}, "weights": {"timestamp": 7}}]})
    7
    """
    return max(
        int(entry[part]["timestamp"])
        for entry in state["portfolios"]
        for part in ("stats", "weights")
    )


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()


def _reset_topics(settings: Settings, progress: Progress) -> None:
    """Delete and re-create the configured topics, so a demo never sees an earlier run."""
    from streamfolio.kafka.admin import admin_client, ensure_topics, topic_specs

    specs = topic_specs(settings)
    admin = admin_client(settings.kafka.bootstrap_servers)
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [s.name for s in specs if s.name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
        # Deletion is asynchronous on the broker; wait until the names are free again.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and set(doomed) & set(
            admin.list_topics(timeout=10).topics
        ):
            time.sleep(0.5)
    ensure_topics(settings.kafka.bootstrap_servers, specs)
    progress(f"topics ready (fresh): {', '.join(s.name for s in specs)}")


def run_demo(options: DemoOptions, progress: Progress) -> int:
    """Run the loop until ``duration_s`` or Ctrl-C; returns a process exit code."""
    from rich.console import Console
    from rich.live import Live

    from streamfolio.config import load_config
    from streamfolio.kafka.admin import topic_specs
    from streamfolio.kafka.local import LocalKafka, repo_root
    from streamfolio.state import initial_state, publish_state

    settings = load_config(options.config_path)
    config = str(options.config_path)
    broker = LocalKafka(settings.kafka, repo_root(), progress=progress)
    started_broker = not broker.is_running()
    broker.up(topic_specs(settings), timeout=120)
    if not options.keep_topics:
        _reset_topics(settings, progress)
    state = initial_state(settings, progress=progress)
    publish_state(settings, state, progress=progress)

    supervisor = Supervisor(options.log_dir, progress)
    code = 0
    try:
        supervisor.start("job", python_command("job", "run", "--config", config))
        if options.source == "sim":
            start = _iso(sim_start_ms(state))
            feed_args = ["--source", "sim", "--seed", str(options.seed), "--start", start]
            feed_args += SIM_ARGS
        elif options.source == "replay":
            if options.prices is None:
                raise ValueError("--source replay needs --prices FILE")
            feed_args = [
                "--source",
                "replay",
                "--prices",
                str(options.prices),
                "--speed",
                str(options.speed),
            ]
        else:
            feed_args = ["--source", "cse"]
        supervisor.start("feed", python_command("feed", *feed_args, "--config", config))
        supervisor.start("rebalancer", python_command("rebalancer", "--config", config))
        supervisor.start("store", python_command("store", "--config", config))
        supervisor.start(
            "dashboard",
            python_command("dashboard", "--config", config, "--port", str(options.dashboard_port)),
        )
        progress(f"dashboard: http://127.0.0.1:{options.dashboard_port}  (Ctrl-C stops everything)")
        code = _live(settings, supervisor, options, Console(stderr=True), Live)
    except KeyboardInterrupt:
        progress("Ctrl-C: stopping")
    finally:
        supervisor.stop_all()
        if started_broker:
            broker.down()
        progress("demo stopped; nothing left running")
    return code


def _live(
    settings: Settings, supervisor: Supervisor, options: DemoOptions, console: Any, live_cls: Any
) -> int:
    state = LiveState()
    consumer = live_consumer(settings)
    deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
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
