"""The demo's supervision: child processes in their own sessions, restarted with back-off when
they exit (or given up on, as configured: :class:`Supervisor`), and stop signals (Ctrl-C,
SIGTERM, SIGHUP) that unwind whatever the demo is doing to one ordered shutdown, which a second
signal cannot cut short; nothing is left running."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from streamfolio.cli_support import STOP_SIGNALS, StopRequested, stop_signals
from streamfolio.demo.components import ComponentView, ago, exit_text, read_status
from streamfolio.demo.restarts import RestartPolicy
from streamfolio.kafka.outage import STATUS_FILE_ENV

Progress = Callable[[str], None]


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


OnFailure = Literal["restart", "stop"]
ON_FAILURE: tuple[OnFailure, ...] = ("restart", "stop")


@dataclass
class Child:
    """A component the supervisor runs: its current process, and what restarting it takes."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    restart_argv: Callable[[], Sequence[str]] | None = None
    """The command of a restart, asked at each (the job resumes from its newest checkpoint);
    None: ``argv`` again."""
    may_finish: bool = False
    """An exit with code 0 means done (a replay feed at the end of its file), not a failure."""
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    exit_code: int | None = None
    outcome: str | None = None
    """Once it will not run again: ``finished``, ``failed`` or ``stopped``."""

    @property
    def status_path(self) -> Path:
        """Where the component says whether it waits for the broker (``STATUS_FILE_ENV``)."""
        return self.log_path.with_suffix(".status")


@dataclass(frozen=True)
class Failure:
    """Why the supervisor gave up on a component: the demo stops, exiting non-zero."""

    child: Child
    reason: str

    @property
    def message(self) -> str:
        return f"{self.reason}; see {self.child.log_path}"


class Supervisor:
    """Runs child processes in their own sessions with logs to files; restarts one that exits
    (``on_failure="restart"``, with back-off and a cap: :class:`RestartPolicy`) or gives up on it
    (``"stop"``) when :meth:`check` finds it gone; stops them all cleanly."""

    def __init__(
        self,
        log_dir: Path,
        progress: Progress,
        *,
        on_failure: OnFailure = "restart",
        policy: Callable[[], RestartPolicy] = RestartPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure: one of {', '.join(ON_FAILURE)}, not {on_failure!r}")
        self.log_dir = log_dir
        self.progress = progress
        self.on_failure = on_failure
        self.children: list[Child] = []
        self.stopping = False
        self.broker_reachable = True
        """Set by the live view's probe: exits while the broker is away do not count towards
        the restart cap (the component would only wait for it again)."""
        self._policy = policy
        self._clock = clock
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        restart_argv: Callable[[], Sequence[str]] | None = None,
        may_finish: bool = False,
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        child_env = {**(env or {}), STATUS_FILE_ENV: str(log_path.with_suffix(".status"))}
        with log_path.open("wb") as handle:
            process = self._spawn(argv, child_env, handle)
        child = Child(
            name,
            process,
            log_path,
            argv=list(argv),
            env=child_env,
            restart_argv=restart_argv,
            may_finish=may_finish,
            policy=self._policy(),
            started_at=self._clock(),
        )
        self.children.append(child)
        self.progress(f"started {name} (pid {process.pid}), log {log_path}")
        return child

    def _spawn(
        self, argv: Sequence[str], env: dict[str, str], log: BinaryIO
    ) -> subprocess.Popen[bytes]:
        # A status file left by an earlier run names another pid and would be ignored anyway.
        with contextlib.suppress(OSError):
            Path(env[STATUS_FILE_ENV]).unlink(missing_ok=True)
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            # Own session: a terminal Ctrl-C reaches only the demo, which stops children in order.
            start_new_session=True,
        )

    def check(self) -> Failure | None:
        """Restart the children whose back-off is over; handle the ones that exited. Returns
        a :class:`Failure` when one is given up on (``on_failure="stop"``, or the restart cap);
        the caller then stops the demo. Call it every second or so."""
        if self.stopping:
            return None
        for child in self.children:
            failure = self._check(child, self._clock())
            if failure is not None:
                child.outcome = "failed"
                return failure
        return None

    def _check(self, child: Child, now: float) -> Failure | None:
        if child.outcome is not None:
            return None
        if child.restart_at is not None:
            return self._restart(child) if now >= child.restart_at else None
        code = child.process.poll()
        if code is None:
            return None
        child.exit_code = code
        # What the run left in its process group (the job's JVM) goes with it: a restart must
        # not find the previous run still holding its ports. Done at once, while the group's
        # members keep its id from being reused.
        _signal_group(child.process, signal.SIGKILL)
        ended = exit_text(code)
        if code == 0 and child.may_finish:
            child.outcome = "finished"
            self.progress(f"{child.name} finished ({ended})")
            return None
        if self.on_failure == "stop":
            return Failure(child, f"{child.name} exited ({ended}); --on-failure stop")
        delay = child.policy.after_exit(child.started_at, now, counted=self.broker_reachable)
        if delay is None:
            return Failure(child, f"{child.name} exited ({ended}) after {child.policy.limit}")
        child.restart_at = now + delay
        self.progress(
            f"{child.name} exited ({ended}); restarting in {delay:g} s, log {child.log_path}"
        )
        return None

    def _restart(self, child: Child) -> Failure | None:
        child.restart_at = None
        child.restarts += 1
        argv = list(child.restart_argv()) if child.restart_argv is not None else child.argv
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        previous = exit_text(child.exit_code) if child.exit_code is not None else "?"
        try:
            # Appended: the log of the run that failed is what explains the restart.
            with child.log_path.open("ab") as handle:
                handle.write(
                    f"\n----- streamfolio demo: restart {child.restarts} of {child.name} at "
                    f"{at} (the previous run ended: {previous}) -----\n".encode()
                )
                handle.flush()
                child.process = self._spawn(argv, child.env, handle)
        except OSError as error:
            return Failure(child, f"{child.name} could not be restarted: {error}")
        child.started_at = self._clock()
        child.exit_code = None
        self.progress(f"restarted {child.name} (pid {child.process.pid}, restart {child.restarts})")
        return None

    def views(self, now: float | None = None) -> list[ComponentView]:
        """Each child's state for the live view."""
        now = self._clock() if now is None else now
        return [self._view(child, now) for child in self.children]

    def _view(self, child: Child, now: float) -> ComponentView:
        def view(state: str, detail: str = "") -> ComponentView:
            return ComponentView(child.name, state, detail, child.restarts, child.log_path)

        if child.restart_at is not None:
            return view("restarting", f"in {max(0, math.ceil(child.restart_at - now))} s")
        code = child.process.poll() if child.outcome is None else child.exit_code
        if child.outcome is not None or code is not None:
            state = child.outcome or ("stopped" if self.stopping else "exited")
            return view(state, exit_text(code) if code is not None else "")
        status = read_status(child.status_path, child.process.pid)
        if status is not None and status.state != "running":
            return view(status.state, ago(status.since))
        return view("running", f"pid {child.process.pid}")

    def _any_running(self) -> bool:
        return any(c.process.poll() is None for c in self.children)

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGINT, then SIGTERM, then SIGKILL, newest first, waiting for each step; no child is
        restarted from now on."""
        self.stopping = True
        for child in self.children:
            child.restart_at = None
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
            if child.outcome is None:
                child.exit_code = child.process.returncode
                child.outcome = "stopped"


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
