"""The local broker's life cycle: :class:`LocalKafka` starts, stops and inspects it.

One combined KRaft broker/controller (node id 1, dynamic quorum) on localhost, started detached
from the caller by :meth:`~LocalKafka.up` (formatting its storage on first use) and stopped by
:meth:`~LocalKafka.down`; :meth:`~LocalKafka.status` reports topics, end offsets and group lag.
Its prerequisites (Java, jars, properties) are in :mod:`streamfolio.kafka.local.install`, its
processes in :mod:`streamfolio.kafka.local.processes`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamfolio.config import KafkaSettings
from streamfolio.devtools.files import locked, tail, tail_lines
from streamfolio.kafka.admin.client import ping
from streamfolio.kafka.admin.ensure import EnsureResult, ensure_topics
from streamfolio.kafka.admin.report import TopicReport, describe
from streamfolio.kafka.admin.specs import TopicSpec
from streamfolio.kafka.local.install import (
    HEAP,
    LIB_DIR,
    LOG4J_CONFIG,
    LocalKafkaError,
    Progress,
    cluster_id,
    fetch_kafka_jars,
    find_java,
    server_properties,
)
from streamfolio.kafka.local.processes import (
    MAIN_CLASS,
    bindable,
    broker_pids,
    is_broker,
    listening,
    start_detached,
    stop,
)

__all__ = ["LocalKafka", "LocalStatus", "UpResult"]

_STORAGE_TOOL = "kafka.tools.StorageTool"


@dataclass(frozen=True)
class UpResult:
    """What :meth:`LocalKafka.up` did: ``started`` is False if the broker was already running."""

    bootstrap: str
    pid: int
    started: bool
    seconds: float
    topics: EnsureResult


@dataclass(frozen=True)
class LocalStatus:
    """The local broker as :meth:`LocalKafka.status` found it.

    ``answering`` says whether a broker answers at ``bootstrap``; when ``running`` is False that
    is some other broker, not one started from ``data_dir``. ``report`` has the topics and groups
    when the local broker runs and answers.
    """

    running: bool
    pid: int | None
    answering: bool
    bootstrap: str
    data_dir: Path
    log_file: Path
    report: TopicReport | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: the fields above, with the report's ``topics`` and ``groups``."""
        report = self.report.to_dict() if self.report is not None else {}
        return {
            "running": self.running,
            "pid": self.pid,
            "answering": self.answering,
            "bootstrap": self.bootstrap,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
            "topics": report.get("topics", []),
            "groups": report.get("groups", []),
        }


class LocalKafka:
    """The single-node broker that ``settings.local`` describes, for the checkout at ``root``.

    ``lib_dir`` overrides the jar cache (default ``root/.cache/kafka/lib/<version>``);
    ``progress`` receives one line per step of long work (the CLI prints them to stderr).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        root: Path,
        *,
        lib_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.local = settings.local
        self.root = root.resolve()
        data_dir = self.local.data_dir
        self.data_dir = (data_dir if data_dir.is_absolute() else self.root / data_dir).resolve()
        self.lib_dir = (lib_dir or self.root / LIB_DIR / self.local.kafka_version).resolve()
        self._progress = progress or (lambda _line: None)

    # ---------------------------------------------------------------------------------- paths

    @property
    def bootstrap(self) -> str:
        """``localhost:<port>``: where clients reach this broker."""
        return f"localhost:{self.local.port}"

    @property
    def properties_file(self) -> Path:
        """The broker's ``server.properties``, rewritten from the settings on every start."""
        return self.data_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        """Holds the broker's process id while it runs."""
        return self.data_dir / "kafka.pid"

    @property
    def out_file(self) -> Path:
        """The JVM's stdout and stderr: crashes before logging starts, e.g. a wrong Java."""
        return self.data_dir / "kafka.out"

    @property
    def log_file(self) -> Path:
        """The broker's log (warnings and errors)."""
        return self.data_dir / "broker.log"

    @property
    def log_dirs(self) -> Path:
        """Kafka's ``log.dirs``: the partitions and the KRaft metadata log."""
        return self.data_dir / "kraft"

    # ------------------------------------------------------------------------------ processes

    def fetch_jars(self) -> Path:
        """Fetch the broker's jars with Maven unless cached; return the folder that holds them
        (see :func:`~streamfolio.kafka.local.install.fetch_kafka_jars`)."""
        return fetch_kafka_jars(self.root, self.local.kafka_version, self.lib_dir, self._progress)

    def _is_broker(self, pid: int) -> bool:
        return is_broker(pid, self.properties_file)

    def _pids(self) -> list[int]:
        return broker_pids(self.pid_file, self.properties_file)

    def pid(self) -> int | None:
        """The broker's process id if it runs, else None (removing a stale pid file)."""
        pids = self._pids()
        if not pids:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pids[0]

    def is_running(self) -> bool:
        """True if a broker started from this data dir is running (answering or not yet)."""
        return bool(self._pids())

    def _java_command(self, java: str, main: str, *args: str, heap: Sequence[str]) -> list[str]:
        return [
            java,
            *heap,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{self.lib_dir}/*",  # expanded by the java launcher, not a shell
            main,
            *args,
        ]

    # ---------------------------------------------------------------------------- lifecycle

    def _check_ports(self) -> None:
        local = self.local
        if local.port == local.controller_port:
            raise LocalKafkaError(
                f"kafka.local.port and kafka.local.controller_port are both {local.port}; "
                "give the controller its own port"
            )
        for key, port in (("port", local.port), ("controller_port", local.controller_port)):
            if listening(port) or not bindable(port):
                raise LocalKafkaError(
                    f"localhost:{port} (kafka.local.{key}) is already in use by another process, "
                    f"not by a broker started from {self.data_dir}; stop that process (see "
                    f"`ss -ltnp 'sport = :{port}'`) or set kafka.local.{key} to a free port"
                )

    def _format(self, java: str) -> None:
        if (self.log_dirs / "meta.properties").is_file():
            return  # formatted by an earlier `up`; the cluster keeps its id and its data
        id_file = self.data_dir / "cluster.id"
        if not id_file.is_file():
            id_file.write_text(cluster_id() + "\n", encoding="utf-8")
        cluster = id_file.read_text(encoding="utf-8").strip()
        self._progress(f"formatting KRaft storage in {self.log_dirs} (cluster id {cluster})…")
        command = self._java_command(
            java,
            _STORAGE_TOOL,
            "format",
            "--standalone",
            "-t",
            cluster,
            "-c",
            str(self.properties_file),
            "--ignore-formatted",
            heap=("-Xmx256m",),
        )
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            raise LocalKafkaError("formatting KRaft storage did not finish in 5 minutes") from None
        if run.returncode != 0:
            raise LocalKafkaError(
                f"formatting KRaft storage in {self.log_dirs} failed (exit {run.returncode}); "
                f"delete {self.data_dir} to start over:\n{tail_lines(run.stdout + run.stderr)}"
            )

    def _start(self, java: str) -> int:
        command = self._java_command(java, MAIN_CLASS, str(self.properties_file), heap=HEAP)
        self.out_file.write_text(f"# {' '.join(command)}\n", encoding="utf-8")
        pid = start_detached(command, self.out_file)
        self.pid_file.write_text(f"{pid}\n", encoding="utf-8")
        return pid

    def _failure(self, what: str) -> LocalKafkaError:
        tails = []
        for path in (self.out_file, self.log_file):
            last = tail(path)
            if last.strip():
                tails.append(f"--- {path} (last lines)\n{last}")
        details = "\n".join(tails) or f"(nothing in {self.out_file} or {self.log_file})"
        return LocalKafkaError(f"{what}\n{details}")

    def _wait_until_answering(self, pid: int, deadline: float, started: float) -> None:
        self._progress(f"waiting for the broker to answer at {self.bootstrap}…")
        while True:
            if not self._is_broker(pid):
                self.pid_file.unlink(missing_ok=True)
                raise self._failure(f"the broker (pid {pid}) exited while starting")
            if listening(self.local.port) and ping(self.bootstrap, timeout=1.0):
                self._progress(
                    f"Kafka answers at {self.bootstrap} after {time.monotonic() - started:.1f} s"
                )
                return
            if time.monotonic() >= deadline:
                stop([pid], self.properties_file, 15.0, self._progress)
                raise self._failure(
                    f"the broker did not answer at {self.bootstrap} within "
                    f"{deadline - started:.0f} s and was stopped; raise the timeout on a slow "
                    "machine, or read the log"
                )
            time.sleep(0.25)

    def up(self, topics: Sequence[TopicSpec] = (), timeout: float = 60.0) -> UpResult:
        """Start the broker unless it runs, wait until it answers, then ensure ``topics``.

        Idempotent: with the broker already running this only creates missing topics. Raises
        :class:`LocalKafkaError` if Java 17+ (or, on the first run, Maven) is missing, a port
        is taken by another process, or the broker does not answer within ``timeout`` seconds
        (the start itself; jars are fetched before the clock starts).
        """
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Two `up`s at once (two terminals, a test session beside a developer) must not format
        # or start twice.
        with locked(self.data_dir / ".lock"):
            pid = self.pid()
            if pid is not None:
                self._progress(f"Kafka is already running (pid {pid}) at {self.bootstrap}")
                if not ping(self.bootstrap, timeout=1.0):
                    self._wait_until_answering(pid, started + timeout, started)
                was_running = True
            else:
                self._check_ports()
                java = find_java()
                self.fetch_jars()
                started = time.monotonic()
                self.properties_file.write_text(
                    server_properties(self.settings, self.log_dirs), encoding="utf-8"
                )
                self._format(java)
                pid = self._start(java)
                self._progress(
                    f"starting Kafka {self.local.kafka_version} (pid {pid}) on {self.bootstrap}, "
                    f"log {self.log_file}"
                )
                self._wait_until_answering(pid, started + timeout, started)
                was_running = False
        ensured = ensure_topics(self.bootstrap, topics, timeout=max(timeout, 10.0))
        if topics:
            parts = [
                f"{label} {', '.join(names)}"
                for label, names in (
                    ("created", ensured.created),
                    ("grew", ensured.grown),
                    ("already there", ensured.existing),
                )
                if names
            ]
            self._progress("topics: " + "; ".join(parts))
        return UpResult(self.bootstrap, pid, not was_running, time.monotonic() - started, ensured)

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Returns False if it was not running. The data dir is kept; the next ``up`` resumes it.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.data_dir / ".lock"):
            pids = self._pids()
            if not pids:
                self.pid_file.unlink(missing_ok=True)
                return False
            started = time.monotonic()
            self._progress(f"stopping Kafka (pid {', '.join(map(str, pids))})…")
            stop(pids, self.properties_file, timeout, self._progress)
            self.pid_file.unlink(missing_ok=True)
            self._progress(f"Kafka stopped after {time.monotonic() - started:.1f} s")
            return True

    def status(self, timeout: float = 10.0) -> LocalStatus:
        """Whether the broker runs and, if it answers, its topics, end offsets and group lag."""
        pid = self.pid()
        answering = listening(self.local.port) and ping(self.bootstrap, timeout=1.0)
        report = None
        if pid is not None and answering:
            report = describe(self.bootstrap, timeout=timeout)
        return LocalStatus(
            running=pid is not None,
            pid=pid,
            answering=answering,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            log_file=self.log_file,
            report=report,
        )
