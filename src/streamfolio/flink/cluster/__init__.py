"""A Flink standalone session cluster of separate processes on this machine, from the
apache-flink wheel: ``streamfolio flink up | down | status``, and the job run on it with
``streamfolio job submit --execute``, ``job status``, ``job stop``.

:class:`LocalFlinkCluster` (:mod:`~streamfolio.flink.cluster.local`) is the whole of it, for
the CLI and for tests: one JobManager and ``flink.cluster.taskmanagers`` TaskManagers, each a
JVM started detached with the wheel's ``jobmanager.sh``/``taskmanager.sh``, its REST API and RPC
on localhost, everything it writes in ``flink.cluster.data_dir``. Modules:
:mod:`~streamfolio.flink.cluster.layout` (the data folder and ``config.yaml``),
:mod:`~streamfolio.flink.cluster.processes` (starting, finding and stopping the JVMs),
:mod:`~streamfolio.flink.cluster.rest` (Flink's REST API),
:mod:`~streamfolio.flink.cluster.status` (what ``flink status`` reports),
:mod:`~streamfolio.flink.cluster.submit` (``flink run``).
"""

from __future__ import annotations

from streamfolio.flink.cluster.local import LocalFlinkCluster
from streamfolio.flink.cluster.processes import ClusterError, ClusterProcess
from streamfolio.flink.cluster.rest import FlinkRest, JobInfo, RestError, SavepointError
from streamfolio.flink.cluster.status import ClusterStatus, TaskManagerStatus

__all__ = [
    "ClusterError",
    "ClusterProcess",
    "ClusterStatus",
    "FlinkRest",
    "JobInfo",
    "LocalFlinkCluster",
    "RestError",
    "SavepointError",
    "TaskManagerStatus",
]
