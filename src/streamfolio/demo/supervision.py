"""The demo's supervision: child processes in their own sessions, and stop signals (Ctrl-C,
SIGTERM, SIGHUP) that unwind whatever the demo is doing to one ordered shutdown, which a second
signal cannot cut short; nothing is left running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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
