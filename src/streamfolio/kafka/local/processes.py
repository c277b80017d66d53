"""The local broker's processes: find them, start one detached, stop them; probe its ports.

A broker is recognised by its command line (``/proc/<pid>/cmdline``): the ``kafka.Kafka`` main
class and the ``server.properties`` of its data dir, so a recycled pid or a zombie never passes
for it, and a broker whose pid file was lost is still found. Without ``/proc`` (macOS) the pid
file is trusted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from streamfolio.devtools import detached
from streamfolio.kafka.local.install import LocalKafkaError, Progress

__all__ = [
    "MAIN_CLASS",
    "bindable",
    "broker_pids",
    "is_broker",
    "listening",
    "start_detached",
    "stop",
]

MAIN_CLASS = "kafka.Kafka"
"""The broker's Java main class."""


def listening(port: int) -> bool:
    """True if something accepts TCP connections on localhost:``port`` (IPv4 or IPv6)."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                if probe.connect_ex((host, port)) == 0:
                    return True
            except OSError:
                continue  # e.g. no IPv6 on this host
    return False


def bindable(port: int) -> bool:
    """True if the broker could bind localhost:``port``. SO_REUSEADDR, as the JVM sets it, so
    that connections of a previous broker still in TIME_WAIT do not count as a conflict."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.decode(errors="replace").split("\0")


def is_broker(pid: int, properties_file: Path) -> bool:
    """True if ``pid`` is a live broker started with ``properties_file``."""
    if Path("/proc/self").exists():
        # A zombie or a recycled pid has another (or an empty) command line.
        args = _cmdline(pid) or []
        return MAIN_CLASS in args and str(properties_file) in args
    try:  # no /proc (macOS): trust the pid file
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def broker_pids(pid_file: Path, properties_file: Path) -> list[int]:
    """Every running broker started with ``properties_file``: the pid file's, and any other."""
    pids = []
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(pid_file.read_text(encoding="utf-8").strip())
        if is_broker(pid, properties_file):
            pids.append(pid)
    proc = Path("/proc")
    if proc.is_dir():
        # A broker whose pid file was lost (deleted data dir, a crash between start and
        # write) would otherwise hold the ports with no way to stop it from here.
        for entry in proc.iterdir():
            if (
                entry.name.isdigit()
                and int(entry.name) not in pids
                and is_broker(int(entry.name), properties_file)
            ):
                pids.append(int(entry.name))
    return pids


def start_detached(command: Sequence[str], out_file: Path) -> int:
    """Start the broker ``command`` detached, its output appended to ``out_file``; its pid."""
    try:
        return detached.start_detached(command, out_file)
    except detached.DetachError as exc:
        raise LocalKafkaError(f"cannot start the broker: {exc}") from None


def stop(pids: Sequence[int], properties_file: Path, timeout: float, progress: Progress) -> None:
    """Stop the brokers ``pids``: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # Kafka's shutdown hook closes logs cleanly
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if is_broker(p, properties_file)]
    if alive:
        progress(f"the broker did not stop within {timeout:g} s; killing it")
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10.0
        while alive and time.monotonic() < kill_deadline:
            time.sleep(0.1)
            alive = [p for p in alive if is_broker(p, properties_file)]
        if alive:
            raise LocalKafkaError(f"broker process(es) {alive} survived SIGKILL")
