"""The local cluster's processes: start a JVM detached, find ours, stop them.

A process is started with the wheel's ``jobmanager.sh`` or ``taskmanager.sh start-foreground``,
which ``exec`` their way into the JVM: the pid the launcher reports is the JVM's. It is known as
this cluster's by its command line (``/proc/<pid>/cmdline``): its main class and ``--configDir``
naming this cluster's ``conf/``, so a recycled pid or a zombie never passes for it, and a
process whose pid was not recorded (a crash between start and write) is still found. Each
TaskManager gets a resource id of its own (``taskmanager.resource-id``: ``tm-1``, ``tm-2``...),
which the REST API reports, so the pid of each registered TaskManager is known.

What the JVMs start in turn (the Python workers of the job's functions in process mode) carry
:data:`MARKER_ENV` in their environment, as every process started here does: a TaskManager
killed with ``kill -9`` may leave its workers behind, and :func:`strays` finds them for
``flink down``. The ``flink run`` client is started without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamfolio.devtools import detached
from streamfolio.errors import StreamfolioError

__all__ = [
    "MAIN_CLASSES",
    "MARKER_ENV",
    "ClusterError",
    "ClusterProcess",
    "ProcessRecord",
    "Role",
    "alive",
    "cluster_processes",
    "ports_free",
    "process_of",
    "start_detached",
    "still_running",
    "stop_processes",
    "strays",
]

Role = Literal["jobmanager", "taskmanager", "worker"]
MARKER_ENV = "STREAMFOLIO_FLINK_CLUSTER"
"""Set to the cluster's data folder in the environment of every process ``flink up`` starts,
and so of theirs."""
MAIN_CLASSES: Mapping[Role, str] = {
    "jobmanager": "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
    "taskmanager": "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
}
_RESOURCE_ID = re.compile(r"^(?:-D)?taskmanager\.resource-id=(.+)$")

Progress = Callable[[str], None]


class ClusterError(StreamfolioError):
    """The local Flink cluster could not be started, reached or stopped. Says where to look."""


@dataclass(frozen=True)
class ClusterProcess:
    """One running JVM of the cluster: its role, pid, and (TaskManagers) resource id."""

    role: Role
    pid: int
    resource_id: str | None = None


class ProcessRecord:
    """``run/processes.json``: the pids ``flink up`` started (``jobmanager``; ``taskmanagers``
    by resource id) and the number of the next TaskManager; written whole, atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, record: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps(record, indent=2), encoding="utf-8")
        scratch.replace(self.path)

    def pids(self) -> list[int]:
        """Every pid recorded (whether it still runs is for :func:`process_of` to say)."""
        record = self.load()
        pids = [record.get("jobmanager"), *dict(record.get("taskmanagers") or {}).values()]
        return [p for p in pids if isinstance(p, int)]


def ports_free(ports: Mapping[str, int]) -> None:
    """Raise :class:`ClusterError` naming the setting of the first port in ``ports`` (setting
    → port) that another process holds on localhost. ``SO_REUSEADDR`` as the JVM sets it, so
    connections of a cluster just stopped, still in ``TIME_WAIT``, are no conflict."""
    for key, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise ClusterError(
                    f"port {port} ({key}) is taken by another process; stop it or set {key}"
                ) from None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.decode(errors="replace").split("\0")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not): for a process just started, which is still a
    shell script on its way to ``exec`` the JVM."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def process_of(
    pid: int, conf_dir: Path, args: Sequence[str] | None = None
) -> ClusterProcess | None:
    """What ``pid`` is, if it is a live JVM of the cluster configured in ``conf_dir``.

    >>> args = ["java", "-cp", "x", MAIN_CLASSES["taskmanager"], "--configDir", "/d/conf",
    ...         "-D", "taskmanager.resource-id=tm-2"]
    >>> process_of(7, Path("/d/conf"), args)
    ClusterProcess(role='taskmanager', pid=7, resource_id='tm-2')
    >>> process_of(7, Path("/other/conf"), args) is None
    True
    """
    args = list(args) if args is not None else _cmdline(pid)
    if not args or "--configDir" not in args:
        return None
    where = args.index("--configDir")
    if where + 1 >= len(args) or args[where + 1] != str(conf_dir):
        return None
    for role, main in MAIN_CLASSES.items():
        if main in args:
            ids = [m[1] for a in args if (m := _RESOURCE_ID.match(a))]
            return ClusterProcess(role, pid, ids[-1] if ids else None)
    return None


def cluster_processes(conf_dir: Path, recorded: Sequence[int] = ()) -> list[ClusterProcess]:
    """Every live JVM of the cluster of ``conf_dir``: the ``recorded`` pids still its own, and
    any other found in ``/proc``; in pid order."""
    candidates = set(recorded)
    proc = Path("/proc")
    if proc.is_dir():
        candidates |= {int(entry.name) for entry in proc.iterdir() if entry.name.isdigit()}
    found = [p for pid in sorted(candidates) if (p := process_of(pid, conf_dir)) is not None]
    return found


def start_detached(command: Sequence[str], env: Mapping[str, str], out_file: Path) -> int:
    """Start ``command`` detached (:func:`streamfolio.devtools.detached.start_detached`: it
    outlives the CLI and the terminal's Ctrl-C), its output appended to ``out_file``; its pid."""
    try:
        return detached.start_detached(command, out_file, env)
    except detached.DetachError as exc:
        raise ClusterError(f"cannot start {command[0]}: {exc}") from None


def _environ(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")


def strays(marker: str, known: Sequence[int] = ()) -> list[ClusterProcess]:
    """Live processes other than ``known`` whose environment holds ``MARKER_ENV=marker``:
    descendants of the cluster's JVMs (``role="worker"``), e.g. left by a killed TaskManager."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    wanted = f"{MARKER_ENV}={marker}"
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in known or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if wanted in (_environ(pid) or ()) and alive(pid):
            found.append(ClusterProcess("worker", pid))
    return sorted(found, key=lambda p: p.pid)


def still_running(process: ClusterProcess, conf_dir: Path, marker: str) -> bool:
    """Whether ``process`` still runs as what it was found to be (not a recycled pid)."""
    if process.role == "worker":
        return alive(process.pid) and f"{MARKER_ENV}={marker}" in (_environ(process.pid) or ())
    return process_of(process.pid, conf_dir) is not None


def stop_processes(
    processes: Sequence[ClusterProcess],
    running: Callable[[ClusterProcess], bool],
    timeout_s: float,
    progress: Progress,
) -> None:
    """Stop ``processes``: SIGTERM (Flink shuts down cleanly), SIGKILL to those still
    ``running`` after ``timeout_s``. Returns once every one is gone."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    left = _wait_gone(processes, running, timeout_s)
    if left:
        names = ", ".join(f"{p.resource_id or p.role} ({p.pid})" for p in left)
        progress(f"not stopped within {timeout_s:g} s, killing: {names}")
        for process in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        left = _wait_gone(left, running, 10.0)
        if left:
            raise ClusterError(f"processes {[p.pid for p in left]} survived SIGKILL")


def _wait_gone(
    processes: Sequence[ClusterProcess],
    running: Callable[[ClusterProcess], bool],
    timeout_s: float,
) -> list[ClusterProcess]:
    deadline = time.monotonic() + timeout_s
    left = list(processes)
    while left:
        left = [p for p in left if running(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return left
