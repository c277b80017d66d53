"""What ``streamfolio flink status`` reports: the cluster's processes, and what its JobManager
knows (TaskManagers and their slots, jobs), joined by the TaskManagers' resource ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamfolio.flink.cluster.processes import ClusterProcess
from streamfolio.flink.cluster.rest import FlinkRest, JobInfo, RestError

__all__ = ["ClusterStatus", "TaskManagerStatus", "cluster_status"]


@dataclass(frozen=True)
class TaskManagerStatus:
    """A TaskManager registered with the JobManager, running here as ``pid``, or both (a killed
    one stays registered, with no pid, until its heartbeat times out; a starting one runs
    before it registers, with no slots yet)."""

    id: str
    pid: int | None
    slots: int | None
    free_slots: int | None


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster as ``streamfolio flink status`` shows it."""

    rest_url: str
    data_dir: Path
    jobmanager_pid: int | None
    answering: bool
    version: str | None = None
    taskmanagers: list[TaskManagerStatus] = field(default_factory=list)
    jobs: list[JobInfo] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.jobmanager_pid is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["data_dir"] = str(self.data_dir)
        data["running"] = self.running
        return data


def cluster_status(
    rest: FlinkRest, data_dir: Path, processes: Sequence[ClusterProcess]
) -> ClusterStatus:
    """The status of the cluster whose JVMs are ``processes``, asking ``rest`` what it knows
    (``answering`` False, with the processes alone, if it does not answer)."""
    jobmanager = next((p.pid for p in processes if p.role == "jobmanager"), None)
    pids = {str(p.resource_id): p.pid for p in processes if p.role == "taskmanager"}
    unregistered = [TaskManagerStatus(i, p, None, None) for i, p in pids.items()]
    try:
        version = rest.version()
        registered = rest.taskmanagers()
        jobs = rest.jobs()
    except RestError:
        return ClusterStatus(
            rest.base_url, data_dir, jobmanager, answering=False, taskmanagers=unregistered
        )
    known = {t.id for t in registered}
    taskmanagers = [
        TaskManagerStatus(t.id, pids.get(t.id), t.slots, t.free_slots) for t in registered
    ] + [t for t in unregistered if t.id not in known]
    return ClusterStatus(rest.base_url, data_dir, jobmanager, True, version, taskmanagers, jobs)
