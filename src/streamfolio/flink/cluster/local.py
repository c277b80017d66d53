""":class:`LocalFlinkCluster`: start, inspect, and stop the local session cluster, and run the
job on it, from the CLI (``streamfolio flink``, ``streamfolio job``) or from tests."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from streamfolio.config import Settings
from streamfolio.config.sections import FlinkClusterSettings
from streamfolio.flink.cluster.layout import ClusterLayout, distribution, write_configuration
from streamfolio.flink.cluster.processes import (
    MARKER_ENV,
    ClusterError,
    ClusterProcess,
    ProcessRecord,
    Role,
    alive,
    cluster_processes,
    ports_free,
    start_detached,
    still_running,
    stop_processes,
    strays,
)
from streamfolio.flink.cluster.rest import FlinkRest
from streamfolio.flink.cluster.status import ClusterStatus, cluster_status
from streamfolio.flink.cluster.submit import run_submit, submit_command

__all__ = [
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "LocalFlinkCluster",
]

START_TIMEOUT_S = 120.0
"""How long ``up`` waits for the REST API and every TaskManager (cold JVMs on a busy 2-core
machine take tens of seconds)."""
STOP_TIMEOUT_S = 15.0
"""How long a process has after SIGTERM before it is killed."""
SUBMIT_TIMEOUT_S = 300.0
"""How long ``flink run`` may take to build and upload the job (a client JVM and Python)."""

Progress = Callable[[str], None]


def _silent(_line: str) -> None:
    pass


class LocalFlinkCluster:
    """The standalone session cluster of ``settings.flink.cluster``: one JobManager and
    TaskManagers, separate JVMs started from the apache-flink wheel, data under ``data_dir``
    (relative to ``root``, the checkout, when not absolute).

    ``taskmanagers`` and ``slots`` override the settings' (``flink up --taskmanagers``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        root: Path | None = None,
        taskmanagers: int | None = None,
        slots: int | None = None,
        progress: Progress = _silent,
    ) -> None:
        cluster = settings.flink.cluster
        overrides = {"taskmanagers": taskmanagers, "slots": slots}
        self.settings = settings
        self.cluster: FlinkClusterSettings = cluster.model_copy(
            update={k: v for k, v in overrides.items() if v is not None}
        )
        data_dir = Path(self.cluster.data_dir)
        if not data_dir.is_absolute():
            data_dir = (root if root is not None else _checkout()) / data_dir
        self.layout = ClusterLayout(data_dir.resolve())
        self.rest = FlinkRest(self.rest_url)
        self._record = ProcessRecord(self.layout.processes_file)
        self._progress = progress

    @property
    def rest_url(self) -> str:
        return f"http://localhost:{self.cluster.rest_port}"

    @property
    def jobmanager_address(self) -> str:
        """What ``flink run -m`` takes: the REST API's host and port."""
        return f"localhost:{self.cluster.rest_port}"

    # ------------------------------------------------------------------------- processes

    def processes(self) -> list[ClusterProcess]:
        """This cluster's live JVMs."""
        return cluster_processes(self.layout.conf_dir, self._record.pids())

    def taskmanager_pids(self) -> list[int]:
        """The pids of the TaskManagers running now (for tests that kill one)."""
        return [p.pid for p in self.processes() if p.role == "taskmanager"]

    def jobmanager_pid(self) -> int | None:
        found = [p.pid for p in self.processes() if p.role == "jobmanager"]
        return found[0] if found else None

    def up(self, *, timeout_s: float = START_TIMEOUT_S) -> list[ClusterProcess]:
        """Start whatever is missing: the JobManager if it is not running, and TaskManagers up
        to ``taskmanagers`` (so after one died, ``up`` starts one in its place); wait until the
        REST API answers and lists every running TaskManager. Returns the processes started
        (none: everything ran already)."""
        running = self.processes()
        started: list[ClusterProcess] = []
        if not any(p.role == "jobmanager" for p in running):
            if running:  # TaskManagers of a JobManager gone: they would not find the new one
                self._progress("TaskManagers without a JobManager: stopping them first")
                self._stop(running, STOP_TIMEOUT_S)
                running = []
            ports_free(
                {
                    "flink.cluster.rest_port": self.cluster.rest_port,
                    "flink.cluster.rpc_port": self.cluster.rpc_port,
                }
            )
            write_configuration(self.cluster, self.layout, self.settings.metrics.job_port)
            self._record.save({})  # a fresh start: TaskManagers are numbered from tm-1 again
            self._progress(
                f"starting the JobManager (REST {self.rest_url}, logs {self.layout.log_dir})"
            )
            started.append(self._start("jobmanager", "jobmanager"))
        self._wait_for_rest(started[0].pid if started else None, timeout_s)
        have = sum(p.role == "taskmanager" for p in running)
        taskmanagers = [self._start_taskmanager() for _ in range(self.cluster.taskmanagers - have)]
        self._wait_for_taskmanagers(taskmanagers, timeout_s)
        started += taskmanagers
        return started

    def start_taskmanager(
        self, *, wait: bool = True, timeout_s: float = START_TIMEOUT_S
    ) -> ClusterProcess:
        """Start one more TaskManager (a new resource id); with ``wait``, return once it has
        registered with the JobManager."""
        process = self._start_taskmanager()
        if wait:
            self._wait_for_taskmanagers([process], timeout_s)
        return process

    def _start_taskmanager(self) -> ClusterProcess:
        record = self._record.load()
        number = int(record.get("next_taskmanager", 1))
        resource_id = f"tm-{number}"
        record["next_taskmanager"] = number + 1
        self._record.save(record)
        self._progress(f"starting TaskManager {resource_id} ({self.cluster.slots} slot(s))")
        return self._start(
            "taskmanager", resource_id, "-D", f"taskmanager.resource-id={resource_id}"
        )

    def down(self, *, timeout_s: float = STOP_TIMEOUT_S) -> list[ClusterProcess]:
        """Stop every process of this cluster (SIGTERM, then SIGKILL after ``timeout_s``), and
        then whatever they left behind (Python workers of a killed TaskManager); the ones
        stopped. Jobs running on it stop too (their checkpoints are retained)."""
        running = self.processes()
        if running:
            self._progress(f"stopping {len(running)} process(es)")
            self._stop(running, timeout_s)
        left = self.strays()
        if left:
            self._progress(f"stopping {len(left)} process(es) left by the cluster's JVMs")
            self._stop(left, timeout_s)
        record = self._record.load()
        if record:
            self._record.save({"next_taskmanager": record.get("next_taskmanager", 1)})
        return running + left

    def strays(self) -> list[ClusterProcess]:
        """Processes started by this cluster's JVMs, or left by them, that are not its JVMs."""
        return strays(str(self.layout.root), [p.pid for p in self.processes()])

    def status(self) -> ClusterStatus:
        """The processes, and (if the REST API answers) what the JobManager knows."""
        return cluster_status(self.rest, self.layout.root, self.processes())

    # ------------------------------------------------------------------------------ jobs

    def submit_command(
        self,
        job_args: Sequence[str],
        *,
        python: str = sys.executable,
        jars: Sequence[Path] | None = None,
    ) -> list[str]:
        """The ``flink run --detached`` command that submits the job (``job.py`` with
        ``job_args``) to this cluster, with the wheel's own ``flink`` client."""
        from streamfolio.flink.connectors import job_jars

        return submit_command(
            job_args,
            jars=job_jars() if jars is None else jars,
            python=python,
            jobmanager=self.jobmanager_address,
            binary=str(distribution() / "bin" / "flink"),
        )

    def submit(
        self,
        job_args: Sequence[str],
        *,
        python: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        jars: Sequence[Path] | None = None,
    ) -> str:
        """Submit the job (``job.py`` with ``job_args``) with ``flink run --detached``; its id.
        ``environ`` (default: this process's) is the client's environment, e.g. with
        ``STREAMFOLIO_FLINK_PYTHON_MODE``. The client's output goes to ``log/flink-run.log``."""
        command = self.submit_command(job_args, python=python, jars=jars)
        self._progress("submitting the job: " + shlex.join(command))
        env = self.layout.environment(os.environ if environ is None else environ)
        return run_submit(
            command, env, self.layout.log_dir / "flink-run.log", timeout_s=SUBMIT_TIMEOUT_S
        )

    def job_state(self, job_id: str) -> str:
        """The job's state (``RUNNING`` once every task of it runs; ``STARTING`` before)."""
        return self.rest.job_state(job_id)

    def wait_for_job(
        self,
        job_id: str,
        states: Iterable[str] = ("RUNNING",),
        *,
        timeout_s: float = START_TIMEOUT_S,
    ) -> str:
        """Wait until the job is in one of ``states``; that state. A job that ends in another
        terminal state (``FAILED``...) raises at once."""
        wanted = set(states)
        deadline = time.monotonic() + timeout_s
        state = "?"
        while time.monotonic() < deadline:
            state = self.rest.job_state(job_id)
            if state in wanted:
                return state
            if state in {"FAILED", "CANCELED", "FINISHED"}:
                break
            time.sleep(0.5)
        raise ClusterError(
            f"job {job_id} is {state}, not {' or '.join(sorted(wanted))}; see the logs in "
            f"{self.layout.log_dir}"
        )

    def stop_with_savepoint(self, job_id: str, target_dir: Path | str | None = None) -> str:
        """Stop the job with a savepoint (default folder: ``<data_dir>/savepoints``); its path."""
        target = None if target_dir is None else _uri(target_dir)
        return self.rest.stop_with_savepoint(job_id, target)

    # ------------------------------------------------------------------------- internals

    def _start(self, role: Role, name: str, *args: str) -> ClusterProcess:
        script = distribution() / "bin" / f"{role}.sh"
        env = self.layout.environment(_base_environment())
        env["FLINK_IDENT_STRING"] = f"streamfolio-{name}"  # names its log files
        env[MARKER_ENV] = str(self.layout.root)  # inherited by whatever the JVM starts
        out = self.layout.log_dir / f"{name}.launch.out"
        pid = start_detached([str(script), "start-foreground", *args], env, out)
        record = self._record.load()
        if role == "jobmanager":
            record["jobmanager"] = pid
        else:
            record.setdefault("taskmanagers", {})[name] = pid
        self._record.save(record)
        return ClusterProcess(role, pid, None if role == "jobmanager" else name)

    def _stop(self, processes: Sequence[ClusterProcess], timeout_s: float) -> None:
        root = str(self.layout.root)
        stop_processes(
            processes,
            lambda p: still_running(p, self.layout.conf_dir, root),
            timeout_s,
            self._progress,
        )

    def _wait_for_rest(self, starting: int | None, timeout_s: float) -> None:
        """Until the REST API answers; ``starting``: the pid of the JobManager just started."""
        deadline = time.monotonic() + timeout_s
        said = False
        while not self.rest.answers():
            if starting is not None and not alive(starting):
                raise ClusterError(
                    f"the JobManager exited at start; see {self._log_of('jobmanager')}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the JobManager's REST API did not answer at {self.rest_url} within "
                    f"{timeout_s:g} s; see {self._log_of('jobmanager')}"
                )
            if not said:
                self._progress("waiting for the JobManager's REST API")
                said = True
            time.sleep(0.5)

    def _wait_for_taskmanagers(self, starting: Sequence[ClusterProcess], timeout_s: float) -> None:
        """Until every running TaskManager, ``starting`` (just started) included, has
        registered; one of ``starting`` that exits fails at once."""
        deadline = time.monotonic() + timeout_s
        said = False
        while True:
            for process in starting:
                if not alive(process.pid):
                    raise ClusterError(
                        f"TaskManager {process.resource_id} exited at start; see "
                        f"{self._log_of(str(process.resource_id))}"
                    )
            running = {p.resource_id for p in self.processes() if p.role == "taskmanager"}
            running |= {p.resource_id for p in starting}
            registered = {t.id for t in self.rest.taskmanagers()}
            missing = sorted(str(r) for r in running - registered)
            if not missing:
                return
            if time.monotonic() > deadline:
                logs = ", ".join(str(self._log_of(m)) for m in missing)
                raise ClusterError(
                    f"TaskManager(s) {', '.join(missing)} did not register within "
                    f"{timeout_s:g} s; see {logs}"
                )
            if not said:
                self._progress(f"waiting for {len(missing)} TaskManager(s) to register")
                said = True
            time.sleep(0.5)

    def _log_of(self, name: str) -> Path:
        """The log file of process ``name`` (``jobmanager``, ``tm-2``), or its folder."""
        found = sorted(self.layout.log_dir.glob(f"flink-streamfolio-{name}-*.log"))
        return found[-1] if found else self.layout.log_dir


def _uri(path: Path | str) -> str:
    """A folder as Flink takes it: URIs unchanged, local paths absolute ``file://``.

    >>> _uri("/sp"), _uri("s3://b/sp")
    ('file:///sp', 's3://b/sp')
    """
    text = str(path)
    return text if "://" in text else Path(text).resolve().as_uri()


def _base_environment() -> dict[str, str]:
    return dict(os.environ)


def _checkout() -> Path:
    from streamfolio.flink.connectors import find_root

    return find_root()
