"""``streamfolio demo``: the whole loop on this machine, and a live view of it.

Starts (and on Ctrl-C, SIGTERM, SIGHUP or ``--duration`` stops, leaving nothing running) the local
Kafka broker, publishes the example portfolios' initial state, then runs the streaming job, the
simulator feed, the rebalancer, the history store and the dashboard as child processes, and shows
a live table per portfolio: Sharpe against its threshold, expected return, risk, last rebalance.

A requested stop (Ctrl-C, ``kill``'s SIGTERM, closing the terminal's SIGHUP) stops the children
newest first, then the broker if the demo started it, and exits with code 0. The demo empties the
topics it uses before it starts, but only on the local broker it started (or found running) from
the checkout's ``kafka.local.data_dir``: pointed at any other cluster it refuses (see
:func:`check_local_cluster`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamfolio.config import Settings
from streamfolio.errors import ConfigError
from streamfolio.kafka.clients import RecordConsumer
from streamfolio.kafka.topics import contract

if TYPE_CHECKING:
    from streamfolio.kafka.local import LocalKafka

Progress = Callable[[str], None]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)
"""Besides Ctrl-C's SIGINT, the signals that stop the demo as Ctrl-C does."""


class StopRequested(KeyboardInterrupt):
    """Raised in the main thread by a stop signal (SIGTERM, SIGHUP), as SIGINT raises
    :class:`KeyboardInterrupt`: whatever the demo is doing unwinds to its ordered shutdown."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def stop_signals(signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`StopRequested`; the previous handlers are
    restored afterwards. Outside the main thread (where Python runs no handlers) it does nothing.

    >>> before = signal.getsignal(signal.SIGTERM)
    >>> with stop_signals():
    ...     signal.getsignal(signal.SIGTERM) is not before
    True
    >>> signal.getsignal(signal.SIGTERM) is before
    True
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, _frame: object) -> None:
        raise StopRequested(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _shielded(signals: Sequence[signal.Signals] = (signal.SIGINT, *STOP_SIGNALS)) -> Iterator[None]:
    # While stopping, a second Ctrl-C, a SIGTERM after a SIGHUP (what a closing terminal may
    # send) or an impatient `kill` must not cut the shutdown short and leave children running.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def tolerant(progress: Progress) -> Progress:
    """``progress`` that never raises ``OSError``: after SIGHUP the terminal is gone and writing
    to it fails (EIO), which must not stop the shutdown half-way."""

    def say(line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: a closed stream
            progress(line)

    return say


def supervise(body: Callable[[], int], shutdown: Callable[[], None], progress: Progress) -> int:
    """Run ``body`` until it returns or a stop is requested, then ``shutdown``, always.

    Ctrl-C (SIGINT), SIGTERM and SIGHUP all stop it the same way: ``body`` unwinds, ``shutdown``
    runs with those signals ignored (a second one cannot cut it short), and the result is 0.
    Otherwise the result is ``body``'s; its exceptions propagate after ``shutdown``.
    """
    code = 0
    with stop_signals():
        try:
            code = body()
        except KeyboardInterrupt as stop:
            progress(f"{_stop_name(stop)}: stopping")
        except OSError as error:
            # Closing the terminal: its SIGHUP unwinds the live view, whose last write to the
            # vanished terminal fails (EIO) and replaces the StopRequested.
            requested = _requested_stop(error)
            if requested is None:
                raise
            progress(f"{_stop_name(requested)}: stopping")
        finally:
            with _shielded():
                shutdown()
                progress("demo stopped; nothing left running")
    return code


def _stop_name(stop: KeyboardInterrupt) -> str:
    return stop.name if isinstance(stop, StopRequested) else "Ctrl-C"


def _requested_stop(error: BaseException) -> StopRequested | None:
    cause: BaseException | None = error.__context__
    while cause is not None:
        if isinstance(cause, StopRequested):
            return cause
        cause = cause.__context__
    return None


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


def local_cluster_id(data_dir: Path) -> str | None:
    """The cluster id of the KRaft storage in ``data_dir`` (``kraft/meta.properties``, else the
    ``cluster.id`` file the storage is formatted with), or None if it holds none.

    >>> local_cluster_id(Path("/nonexistent")) is None
    True
    """
    with contextlib.suppress(OSError):
        for line in (
            (data_dir / "kraft" / "meta.properties").read_text(encoding="utf-8").splitlines()
        ):
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id" and value.strip():
                return value.strip()
    with contextlib.suppress(OSError):
        return (data_dir / "cluster.id").read_text(encoding="utf-8").strip() or None
    return None


def cluster_id(settings: Settings, timeout: float = 10.0) -> str | None:
    """The id the cluster at ``kafka.bootstrap_servers`` reports (``describe_cluster``)."""
    from streamfolio.kafka.admin import admin_client

    admin = admin_client(
        settings.kafka.bootstrap_servers, settings.kafka.client_config(), quiet=True
    )
    described = admin.describe_cluster(request_timeout=timeout).result(timeout=timeout + 5)
    found = getattr(described, "cluster_id", None)
    return str(found) if found else None


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"})


def _is_local_address(bootstrap: str, port: int) -> bool:
    """True if every server of ``bootstrap`` is this machine's ``port``.

    >>> _is_local_address("localhost:9092, 127.0.0.1:9092", 9092)
    True
    >>> _is_local_address("localhost:9092,kafka.example.com:9092", 9092)
    False
    """
    for server in bootstrap.split(","):
        host, _, found = server.strip().rpartition(":")
        if host.lower() not in _LOOPBACK or found != str(port):
            return False
    return True


def check_local_cluster(
    settings: Settings,
    broker: LocalKafka,
    describe: Callable[[Settings], str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse (:class:`~streamfolio.errors.ConfigError`) unless ``kafka.bootstrap_servers`` is
    the local broker ``broker`` (the one the demo started or found running from its data dir).

    The cluster id the servers report (``describe``, default :func:`cluster_id`) must be the
    one formatted into the data dir, which holds whatever the servers are called (``localhost``
    or ``127.0.0.1``); when the data dir has none yet, the servers must be ``broker``'s own port
    on this machine.
    """
    bootstrap = settings.kafka.bootstrap_servers
    expected = local_cluster_id(broker.data_dir)
    reason = ""
    if expected is None:
        if not _is_local_address(bootstrap, broker.local.port):
            reason = f"it is not the local broker's address {broker.bootstrap}"
    else:
        try:
            found = (describe or cluster_id)(settings)
        except Exception as error:  # any failure: not confirmed
            found = None
            reason = f"its cluster id could not be read ({type(error).__name__})"
        if found != expected and not reason:
            reason = (
                f"it is cluster {found or '(unknown)'}, not the local broker's cluster "
                f"{expected} (from {broker.data_dir})"
            )
    if not reason:
        return
    env = os.environ if environ is None else environ
    variable = next((n for n in env if n.upper() == "STREAMFOLIO_KAFKA__BOOTSTRAP_SERVERS"), None)
    origin = f" (set by environment variable {variable})" if variable else ""
    raise ConfigError(
        "kafka.bootstrap_servers",
        f"{bootstrap!r}{origin}: {reason}; the demo only resets topics on the local broker it "
        "started, and deletes nothing elsewhere",
        f"point kafka.bootstrap_servers at the local broker ({broker.bootstrap})"
        + (f", e.g. unset {variable}" if variable else "")
        + ", or pass --keep-topics to run on that cluster without deleting its topics",
    )


def _reset_topics(settings: Settings, progress: Progress) -> None:
    """Delete and re-create the configured topics, so a demo never sees an earlier run.

    Only after :func:`check_local_cluster`: this deletes whatever the topics hold.
    """
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
    """Run the loop until ``duration_s``, Ctrl-C, SIGTERM or SIGHUP; returns a process exit code
    (0 for a requested stop, as for a run to ``duration_s``)."""
    from rich.console import Console
    from rich.live import Live

    from streamfolio.config import load_config
    from streamfolio.kafka.admin import topic_specs
    from streamfolio.kafka.local import LocalKafka, repo_root
    from streamfolio.state import initial_state, publish_state

    progress = tolerant(progress)
    settings = load_config(options.config_path)
    config = str(options.config_path)
    broker = LocalKafka(settings.kafka, repo_root(), progress=progress)
    supervisor = Supervisor(options.log_dir, progress)
    started_broker = False

    def body() -> int:
        nonlocal started_broker
        started_broker = not broker.is_running()
        broker.up(topic_specs(settings), timeout=120)
        if not options.keep_topics:
            check_local_cluster(settings, broker)
            _reset_topics(settings, progress)
        state = initial_state(settings, progress=progress)
        publish_state(settings, state, progress=progress)
        supervisor.start("job", python_command("job", "run", "--config", config))
        supervisor.start(
            "feed", python_command("feed", *_feed_args(options, state), "--config", config)
        )
        supervisor.start("rebalancer", python_command("rebalancer", "--config", config))
        supervisor.start("store", python_command("store", "--config", config))
        supervisor.start(
            "dashboard",
            python_command("dashboard", "--config", config, "--port", str(options.dashboard_port)),
        )
        progress(f"dashboard: http://127.0.0.1:{options.dashboard_port}  (Ctrl-C stops everything)")
        return _live(settings, supervisor, options, Console(stderr=True), Live)

    def shutdown() -> None:
        supervisor.stop_all()
        if started_broker:
            broker.down()

    return supervise(body, shutdown, progress)


def _feed_args(options: DemoOptions, state: dict[str, Any]) -> list[str]:
    if options.source == "sim":
        start = _iso(sim_start_ms(state))
        return ["--source", "sim", "--seed", str(options.seed), "--start", start, *SIM_ARGS]
    if options.source == "replay":
        if options.prices is None:
            raise ValueError("--source replay needs --prices FILE")
        return [
            "--source",
            "replay",
            "--prices",
            str(options.prices),
            "--speed",
            str(options.speed),
        ]
    return ["--source", "cse"]


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
