"""What each of the demo's components is doing, as the live view shows it: running, waiting for
the broker (from the status file the component writes), restarting, finished, stopped or
failed; and whether the broker, or each node of a cluster, answers (:func:`broker_probe`)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ComponentView",
    "StatusReport",
    "broker_probe",
    "exit_text",
    "is_reachable",
    "read_status",
    "tcp_answering",
    "tcp_reachable",
]


@dataclass(frozen=True)
class ComponentView:
    """One row of the live view's component table."""

    name: str
    state: str
    """``running``, ``waiting for the broker``, ``restarting``, ``finished``, ``stopped`` or
    ``failed``."""
    detail: str = ""
    restarts: int = 0
    log_path: Path | None = None


@dataclass(frozen=True)
class StatusReport:
    state: str
    since: float
    """Wall-clock seconds (``time.time()``) when the component entered ``state``."""


def read_status(path: Path, pid: int) -> StatusReport | None:
    """The state the process ``pid`` wrote to ``path`` (see ``STATUS_FILE_ENV`` in
    :mod:`streamfolio.kafka.outage`); None when absent, unreadable, or another process's (an
    earlier run of the component, before a restart).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "store.status"
    >>> _ = path.write_text('{"state": "waiting for the broker", "since": 5.0, "pid": 42}')
    >>> read_status(path, 42)
    StatusReport(state='waiting for the broker', since=5.0)
    >>> read_status(path, 43) is None, read_status(path.with_suffix(".none"), 42) is None
    (True, True)
    """
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, or caught half-written
        return None
    if not isinstance(data, dict) or data.get("pid") != pid:
        return None
    state, since = data.get("state"), data.get("since")
    if not isinstance(state, str) or not isinstance(since, int | float):
        return None
    return StatusReport(state, float(since))


def exit_text(code: int) -> str:
    """How a process ended, from its ``returncode``.

    >>> exit_text(3), exit_text(0), exit_text(-9)
    ('exit code 3', 'exit code 0', 'killed by SIGKILL')
    """
    if code < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def ago(since: float, now: float | None = None) -> str:
    """``'for 12 s'`` since the wall-clock time ``since``.

    >>> ago(100.0, now=112.4), ago(100.0, now=400.0)
    ('for 12 s', 'for 5 min 0 s')
    """
    seconds = max(0, round((time.time() if now is None else now) - since))
    minutes, secs = divmod(seconds, 60)
    return f"for {minutes} min {secs} s" if minutes else f"for {secs} s"


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    """``bootstrap``'s ``host:port`` pairs; one without a port number is left out.

    >>> _servers("localhost:19092, [::1]:19093,no-port")
    [('localhost', 19092), ('::1', 19093)]
    """
    found = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        with contextlib.suppress(ValueError):
            found.append((host.strip("[]") or "localhost", int(port)))
    return found


def _accepts(server: tuple[str, int], timeout: float) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(server, timeout):
        return True
    return False


def tcp_reachable(bootstrap: str, timeout: float = 0.3) -> bool:
    """True if any ``host:port`` of ``bootstrap`` accepts a TCP connection within ``timeout``
    seconds each: cheap, and bounded, unlike a Kafka metadata request.

    >>> tcp_reachable("127.0.0.1:1", timeout=0.1)
    False
    """
    return any(_accepts(server, timeout) for server in _servers(bootstrap))


def tcp_answering(bootstrap: str, timeout: float = 0.3) -> tuple[int, int]:
    """How many servers of ``bootstrap`` accept a TCP connection (within ``timeout`` seconds
    each), of how many: a cluster with one node down still serves every client, which the live
    view says rather than calling it down.

    >>> tcp_answering("127.0.0.1:1,127.0.0.1:2", timeout=0.1)
    (0, 2)
    """
    servers = _servers(bootstrap)
    return sum(_accepts(server, timeout) for server in servers), len(servers)


class _Broker(Protocol):
    def is_running(self) -> bool: ...


def broker_probe(
    bootstrap: str,
    broker: _Broker,
    reachable: Callable[[str], bool | tuple[int, int]] = tcp_answering,
) -> Callable[[], str]:
    """A check of the broker (or every node of a cluster) for the live view: ``reachable``,
    ``reachable (2 of 3 brokers)`` when some nodes of several do not answer, ``not answering
    (its process runs)`` or ``down (no broker process)``; its processes are looked for only when
    none answers. ``reachable`` says whether the servers answer: a bool, or how many of how
    many (:func:`tcp_answering`).

    >>> class Gone:
    ...     def is_running(self) -> bool:
    ...         return False
    >>> broker_probe("localhost:9092", Gone(), reachable=lambda _b: False)()
    'down (no broker process)'
    >>> broker_probe("localhost:19092,localhost:19093", Gone(), reachable=lambda _b: (1, 2))()
    'reachable (1 of 2 brokers)'
    """

    def probe() -> str:
        found = reachable(bootstrap)
        answering, total = (int(found), 1) if isinstance(found, bool) else found
        if answering and answering >= total:
            return "reachable"
        if answering:
            return f"reachable ({answering} of {total} brokers)"
        if broker.is_running():
            return "not answering (its process runs)"
        return "down (no broker process)"

    return probe


def is_reachable(probed: str) -> bool:
    """Whether what :func:`broker_probe` said lets the components work: some broker answers
    (a cluster missing a node still serves every partition from the others).

    >>> is_reachable("reachable"), is_reachable("reachable (2 of 3 brokers)")
    (True, True)
    >>> is_reachable("down (no broker process)")
    False
    """
    return probed.startswith("reachable")
