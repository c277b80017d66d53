"""Flink's REST API, the little of it the CLI and the tests need: TaskManagers, jobs, their
states, stop-with-savepoint, and the newest retained checkpoint.

Plain ``urllib`` (no client library): a handful of JSON calls to a cluster on localhost. Every
network or HTTP failure becomes a :class:`RestError` naming the URL, so a command says
``error: ... (is the cluster up? streamfolio flink up)`` rather than a traceback.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from streamfolio.errors import StreamfolioError

__all__ = [
    "FlinkRest",
    "JobInfo",
    "RestError",
    "SavepointError",
    "TaskManagerInfo",
    "local_path",
    "savepoint_location",
]

REQUEST_TIMEOUT_S = 10.0


class RestError(StreamfolioError):
    """The cluster's REST API did not answer, or refused a request."""


class SavepointError(StreamfolioError):
    """A stop-with-savepoint failed (the job keeps running) or did not finish in time."""


@dataclass(frozen=True)
class TaskManagerInfo:
    """A TaskManager registered with the JobManager."""

    id: str
    slots: int
    free_slots: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskManagerInfo:
        """
        >>> TaskManagerInfo.from_json({"id": "tm-1", "slotsNumber": 1, "freeSlots": 0})
        TaskManagerInfo(id='tm-1', slots=1, free_slots=0)
        """
        return cls(str(data["id"]), int(data["slotsNumber"]), int(data["freeSlots"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobInfo:
    """A job the cluster knows (running or finished): id, name, state (``RUNNING``...)."""

    id: str
    name: str
    state: str
    start_time_ms: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobInfo:
        """
        >>> JobInfo.from_json({"jid": "ab", "name": "streamfolio", "state": "RUNNING",
        ...                    "start-time": 5})
        JobInfo(id='ab', name='streamfolio', state='RUNNING', start_time_ms=5)
        """
        return cls(str(data["jid"]), str(data["name"]), str(data["state"]), int(data["start-time"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FlinkRest:
    """The REST API at ``base_url`` (``http://localhost:8081``)."""

    def __init__(self, base_url: str, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise RestError(f"{method} {url}: HTTP {exc.code} {detail}") from None
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RestError(f"no answer from the Flink REST API at {url}: {reason}") from None
        return json.loads(text) if text else None

    def answers(self) -> bool:
        """Whether the REST API answers at all."""
        try:
            self._call("GET", "/config")
        except RestError:
            return False
        return True

    def version(self) -> str:
        return str(self._call("GET", "/config").get("flink-version", "?"))

    def taskmanagers(self) -> list[TaskManagerInfo]:
        """The TaskManagers registered now (a killed one stays until its heartbeat times out)."""
        found = self._call("GET", "/taskmanagers")["taskmanagers"]
        return sorted((TaskManagerInfo.from_json(t) for t in found), key=lambda t: t.id)

    def jobs(self) -> list[JobInfo]:
        """Every job the cluster knows, newest first."""
        found = self._call("GET", "/jobs/overview")["jobs"]
        return sorted(
            (JobInfo.from_json(j) for j in found), key=lambda j: j.start_time_ms, reverse=True
        )

    def job_state(self, job_id: str) -> str:
        """``RUNNING``, ``RESTARTING``, ``FINISHED``, ``CANCELED``, ``FAILED``...; also what
        the job's tasks do: ``RUNNING`` here means every task of it runs (not merely
        scheduled), which is what a caller waiting for a (re)started job wants to know."""
        detail = self._call("GET", f"/jobs/{job_id}")
        state = str(detail["state"])
        if state == "RUNNING":
            tasks = [v.get("status") for v in detail.get("vertices", [])]
            if any(t != "RUNNING" for t in tasks):
                return "STARTING"
        return state

    def job_taskmanagers(self, job_id: str) -> set[str]:
        """The TaskManagers (resource ids) running any task of the job."""
        detail = self._call("GET", f"/jobs/{job_id}")
        found: set[str] = set()
        for vertex in detail.get("vertices", []):
            where = self._call("GET", f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
            found |= {str(t["taskmanager-id"]) for t in where.get("taskmanagers", [])}
        return found

    def latest_checkpoint(self, job_id: str) -> str | None:
        """The path of the job's newest completed checkpoint, if any."""
        stats = self._call("GET", f"/jobs/{job_id}/checkpoints")
        completed = (stats.get("latest") or {}).get("completed") or {}
        path = completed.get("external_path")
        return local_path(str(path)) if path else None

    def restored_from(self, job_id: str) -> str | None:
        """The checkpoint or savepoint the job was last restored from, if any."""
        stats = self._call("GET", f"/jobs/{job_id}/checkpoints")
        restored = (stats.get("latest") or {}).get("restored") or {}
        path = restored.get("external_path")
        return local_path(str(path)) if path else None

    def cancel(self, job_id: str) -> None:
        """Cancel the job (its checkpoints are retained: the job retains them on cancellation)."""
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel")

    def stop_with_savepoint(
        self,
        job_id: str,
        target_dir: str | None,
        *,
        timeout_s: float = 300.0,
        poll_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> str:
        """Stop the job with a savepoint in ``target_dir`` (None: the cluster's
        ``execution.checkpointing.savepoint-dir``); wait for it; its path."""
        body: dict[str, Any] = {"drain": False}
        if target_dir is not None:
            body["targetDirectory"] = target_dir
        trigger = self._call("POST", f"/jobs/{job_id}/stop", body)["request-id"]
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
            if answer["status"]["id"] == "COMPLETED":
                return savepoint_location(answer)
            if time.monotonic() > deadline:
                raise SavepointError(
                    f"the savepoint of job {job_id} did not complete within {timeout_s:g} s"
                )
            sleep(poll_s)


def savepoint_location(answer: Mapping[str, Any]) -> str:
    """The path in a completed savepoint operation's answer, or :class:`SavepointError` with
    the failure's cause.

    >>> savepoint_location({"operation": {"location": "file:/sp/savepoint-1"}})
    '/sp/savepoint-1'
    >>> try:
    ...     savepoint_location({"operation": {"failure-cause": {"stack-trace": "x: no\\nat y"}}})
    ... except SavepointError as error:
    ...     print(error)
    the savepoint failed (the job keeps running): x: no
    """
    operation = answer.get("operation") or {}
    if operation.get("location"):
        return local_path(str(operation["location"]))
    cause = operation.get("failure-cause") or {}
    first_line = str(cause.get("stack-trace", cause) or "no reason given").splitlines()[0]
    raise SavepointError(f"the savepoint failed (the job keeps running): {first_line}")


def local_path(location: str) -> str:
    """A location Flink reports, as a plain path when it is a local file (what
    ``--from-checkpoint`` and a shell take); other URIs unchanged.

    >>> local_path("file:/sp/savepoint-1"), local_path("file:///sp/x"), local_path("s3://b/x")
    ('/sp/savepoint-1', '/sp/x', 's3://b/x')
    """
    if location.startswith("file:"):
        rest = location[len("file:") :]
        return "/" + rest.lstrip("/")
    return location
