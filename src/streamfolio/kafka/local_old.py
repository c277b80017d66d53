"""A real single-node Apache Kafka 4.x broker on this machine, without Docker.

:class:`LocalKafka` runs one combined KRaft broker/controller (node id 1, dynamic quorum) on
localhost with the machine's Java 17+:

* :meth:`~LocalKafka.fetch_jars` fetches the broker's jars from Maven Central once, with Maven
  and ``tools/kafka/pom.xml``, into ``.cache/kafka/lib/<kafka_version>/`` of the checkout;
* :meth:`~LocalKafka.up` formats KRaft storage on first use, starts ``kafka.Kafka`` detached from
  the caller (it outlives the CLI and ignores the terminal's Ctrl-C), waits until it answers and
  creates the topics; if the broker already runs it only creates missing topics;
* :meth:`~LocalKafka.down` stops it: SIGTERM (a clean shutdown), then SIGKILL after a timeout;
* :meth:`~LocalKafka.status` says whether it runs, with topics, end offsets and group lag.

Everything the broker writes lives in ``kafka.local.data_dir`` (relative to the checkout):
``server.properties``, ``kafka.pid``, ``kafka.out`` (the JVM's own output), ``broker.log``
(warnings and errors, see ``tools/kafka/log4j2.properties``) and ``kraft/`` (the log dirs).
Deleting the data dir while the broker is down starts over with an empty cluster.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamfolio.config import KafkaSettings
from streamfolio.errors import StreamfolioError
from streamfolio.kafka.admin import (
    EnsureResult,
    TopicReport,
    TopicSpec,
    describe,
    ensure_topics,
    ping,
)

__all__ = [
    "HEAP",
    "LIB_DIR",
    "LOG4J_CONFIG",
    "MIN_JAVA",
    "POM",
    "LocalKafka",
    "LocalKafkaError",
    "LocalStatus",
    "UpResult",
    "find_java",
    "repo_root",
]

POM = Path("tools/kafka/pom.xml")
"""The Maven project that names the broker's jars, relative to the checkout."""
LOG4J_CONFIG = Path("tools/kafka/log4j2.properties")
"""The broker's logging configuration, relative to the checkout."""
LIB_DIR = Path(".cache/kafka/lib")
"""Where fetched jars are cached, one folder per Kafka version, relative to the checkout."""
HEAP = ("-Xms256m", "-Xmx512m")
"""A development broker needs little; Kafka's own start script asks for 1 GiB."""
MIN_JAVA = 17
"""Kafka 4.x brokers need Java 17 or newer."""

_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_LOG_TAIL_LINES = 30

Progress = Callable[[str], None]


class LocalKafkaError(StreamfolioError):
    """The local broker cannot be fetched, started, reached or stopped. Says what to do."""


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


def repo_root(start: Path | None = None) -> Path:
    """The streamfolio checkout: the nearest folder at or above ``start`` (default: the working
    directory) that holds ``tools/kafka/pom.xml``, else the checkout this package runs from."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / POM).is_file():
            return folder
    source = Path(__file__).resolve().parents[3]  # src/streamfolio/kafka/local.py
    if (source / POM).is_file():
        return source
    raise LocalKafkaError(
        f"no streamfolio checkout (with {POM}) at or above {here}; run this from the repository, "
        "where the pom that names the Kafka jars lives"
    )


def find_java() -> str:
    """The ``java`` to run: ``$JAVA_HOME/bin/java`` if set, else the one on ``PATH``.

    Raises :class:`LocalKafkaError` if there is none, or if it is older than :data:`MIN_JAVA`.
    """
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise LocalKafkaError(
            f"Java {MIN_JAVA}+ is needed to run Kafka and none was found "
            f"({'JAVA_HOME=' + home if home else 'no java on PATH'}); install one, e.g. "
            "`apt-get install openjdk-17-jre-headless`, or set JAVA_HOME"
        )
    try:
        shown = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"cannot run {java} -version: {exc}") from None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', shown.stderr + shown.stdout)
    if found:
        # "1.8.0_392" is Java 8; "17.0.15" is Java 17.
        major = int(found[2] or 0) if found[1] == "1" else int(found[1])
        if major < MIN_JAVA:
            raise LocalKafkaError(
                f"{java} is Java {major}; Kafka 4 brokers need Java {MIN_JAVA}+: install "
                "openjdk-17-jre-headless (or newer) and put it first on PATH or in JAVA_HOME"
            )
    return java


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two `up`s at once (two terminals, a test session beside a developer) must not format,
    # start or fetch twice; an advisory lock serialises them and dies with its process.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _cluster_id() -> str:
    # What `StorageTool random-uuid` prints (Kafka's Uuid.randomUuid: a random UUID in URL-safe
    # base64 without padding, never starting with '-'), without paying for a JVM start.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def _listening(port: int) -> bool:
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


def _bindable(port: int) -> bool:
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

    # ----------------------------------------------------------------------------------- jars

    def fetch_jars(self) -> Path:
        """Fetch the broker's jars with Maven unless cached; return the folder that holds them.

        Runs ``mvn dependency:copy-dependencies`` on ``tools/kafka/pom.xml`` with
        ``-Dkafka.version`` from the settings, into a temporary folder renamed into place when
        complete, so an interrupted fetch is simply redone.
        """
        done = self.lib_dir / ".complete"
        if done.is_file():
            return self.lib_dir
        with _locked(self.lib_dir.parent / f".{self.lib_dir.name}.lock"):
            if done.is_file():  # fetched by another process while this one waited
                return self.lib_dir
            self._fetch_jars()
        return self.lib_dir

    def _fetch_jars(self) -> None:
        version = self.local.kafka_version
        pom = self.root / POM
        if not pom.is_file():
            raise LocalKafkaError(f"{pom} is missing; it names the Kafka jars to fetch")
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError(
                f"Maven (mvn) is needed once, to fetch the Kafka {version} jars from Maven "
                f"Central into {self.lib_dir}; install it (`apt-get install maven`) or put mvn on "
                "PATH"
            )
        self._progress(
            f"fetching Kafka {version} jars with Maven (first run only) into {self.lib_dir}…"
        )
        started = time.monotonic()
        partial = self.lib_dir.parent / f".{self.lib_dir.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
            f"-Dkafka.version={version}",
        ]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        except subprocess.TimeoutExpired:
            shutil.rmtree(partial, ignore_errors=True)
            raise LocalKafkaError(
                "Maven did not finish fetching the Kafka jars in 30 minutes; check the network"
            ) from None
        broker_jar = partial / f"kafka_2.13-{version}.jar"
        if run.returncode != 0 or not broker_jar.is_file():
            shutil.rmtree(partial, ignore_errors=True)
            output = "\n".join((run.stdout + run.stderr).splitlines()[-_LOG_TAIL_LINES:])
            raise LocalKafkaError(
                f"Maven could not fetch Kafka {version} (exit {run.returncode}; is "
                f"org.apache.kafka:kafka_2.13:{version} on Maven Central, and Maven Central "
                f"reachable?):\n$ {' '.join(command)}\n{output}"
            )
        shutil.rmtree(self.lib_dir, ignore_errors=True)  # an incomplete earlier attempt
        partial.rename(self.lib_dir)
        (self.lib_dir / ".complete").write_text(f"{version}\n", encoding="utf-8")
        jars = list(self.lib_dir.glob("*.jar"))
        size = sum(j.stat().st_size for j in jars) / 1e6
        self._progress(
            f"fetched {len(jars)} jars ({size:.0f} MB) in {time.monotonic() - started:.1f} s"
        )

    # ------------------------------------------------------------------------------ processes

    def _cmdline(self, pid: int) -> list[str] | None:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        return raw.decode(errors="replace").split("\0")

    def _is_broker(self, pid: int) -> bool:
        """True if ``pid`` is a live broker started with this data dir's properties file."""
        if Path("/proc/self").exists():
            # A zombie or a recycled pid has another (or an empty) command line.
            args = self._cmdline(pid) or []
            return _MAIN_CLASS in args and str(self.properties_file) in args
        try:  # no /proc (macOS): trust the pid file
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _pids(self) -> list[int]:
        """Every running broker process of this data dir: the pid file's, and any other."""
        pids = []
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
            if self._is_broker(pid):
                pids.append(pid)
        proc = Path("/proc")
        if proc.is_dir():
            # A broker whose pid file was lost (deleted data dir, a crash between start and
            # write) would otherwise hold the ports with no way to stop it from here.
            for entry in proc.iterdir():
                if (
                    entry.name.isdigit()
                    and int(entry.name) not in pids
                    and self._is_broker(int(entry.name))
                ):
                    pids.append(int(entry.name))
        return pids

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

    # --------------------------------------------------------------------------------- config

    def _properties(self) -> str:
        local = self.local
        host = "localhost"
        return "\n".join(
            [
                "# Written by `streamfolio kafka up` from the config; edits are overwritten.",
                "process.roles=broker,controller",
                "node.id=1",
                # Dynamic quorum (KIP-853): the storage is formatted with --standalone.
                f"controller.quorum.bootstrap.servers={host}:{local.controller_port}",
                f"listeners=PLAINTEXT://{host}:{local.port},CONTROLLER://{host}:{local.controller_port}",
                f"advertised.listeners=PLAINTEXT://{host}:{local.port},"
                f"CONTROLLER://{host}:{local.controller_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.log_dirs}",
                f"num.partitions={self.settings.partitions}",
                # Topics are created explicitly with their partition counts and configs; a typo
                # in a topic name must fail, not create a one-off topic.
                "auto.create.topics.enable=false",
                # One broker: internal topics cannot have more replicas than that, and fewer
                # partitions than the default 50 make the first group join quick on 2 cores.
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=3",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=3",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                # A lone consumer gets its partitions at once instead of after 3 s.
                "group.initial.rebalance.delay.ms=0",
                # Exactly-once Flink sinks use transaction.timeout.ms up to 15 min
                # (research/streaming.md §3.5); the broker must accept it.
                "transaction.max.timeout.ms=900000",
                "",
            ]
        )

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
            if _listening(port) or not _bindable(port):
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
            id_file.write_text(_cluster_id() + "\n", encoding="utf-8")
        cluster_id = id_file.read_text(encoding="utf-8").strip()
        self._progress(f"formatting KRaft storage in {self.log_dirs} (cluster id {cluster_id})…")
        command = self._java_command(
            java,
            _STORAGE_TOOL,
            "format",
            "--standalone",
            "-t",
            cluster_id,
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
            output = "\n".join((run.stdout + run.stderr).splitlines()[-_LOG_TAIL_LINES:])
            raise LocalKafkaError(
                f"formatting KRaft storage in {self.log_dirs} failed (exit {run.returncode}); "
                f"delete {self.data_dir} to start over:\n{output}"
            )

    def _start(self, java: str) -> int:
        command = self._java_command(java, _MAIN_CLASS, str(self.properties_file), heap=HEAP)
        self.out_file.write_text(f"# {' '.join(command)}\n", encoding="utf-8")
        # A throwaway shell starts the JVM in the background and exits: the broker is re-parented
        # to init, so it survives this process, is never left a zombie of it (which would look
        # alive), and Popen has no running child to warn about. start_new_session puts it in its
        # own session, out of reach of the terminal's Ctrl-C.
        launcher = 'out=$1; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'
        try:
            run = subprocess.run(
                ["/bin/sh", "-c", launcher, "sh", str(self.out_file), *command],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
                start_new_session=True,
            )
            pid = int(run.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise LocalKafkaError(f"cannot start the broker: {exc}") from None
        self.pid_file.write_text(f"{pid}\n", encoding="utf-8")
        return pid

    def _failure(self, what: str) -> LocalKafkaError:
        tails = []
        for path in (self.out_file, self.log_file):
            tail = _tail(path)
            if tail.strip():
                tails.append(f"--- {path} (last lines)\n{tail}")
        details = "\n".join(tails) or f"(nothing in {self.out_file} or {self.log_file})"
        return LocalKafkaError(f"{what}\n{details}")

    def _wait_until_answering(self, pid: int, deadline: float, started: float) -> None:
        self._progress(f"waiting for the broker to answer at {self.bootstrap}…")
        while True:
            if not self._is_broker(pid):
                self.pid_file.unlink(missing_ok=True)
                raise self._failure(f"the broker (pid {pid}) exited while starting")
            if _listening(self.local.port) and ping(self.bootstrap, timeout=1.0):
                self._progress(
                    f"Kafka answers at {self.bootstrap} after {time.monotonic() - started:.1f} s"
                )
                return
            if time.monotonic() >= deadline:
                self._stop([pid], timeout=15.0)
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
        with _locked(self.data_dir / ".lock"):
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
                self.properties_file.write_text(self._properties(), encoding="utf-8")
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

    def _stop(self, pids: Sequence[int], timeout: float) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # Kafka's shutdown hook closes logs cleanly
        deadline = time.monotonic() + timeout
        alive = list(pids)
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in alive if self._is_broker(p)]
        if alive:
            self._progress(f"the broker did not stop within {timeout:g} s; killing it")
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 10.0
            while alive and time.monotonic() < kill_deadline:
                time.sleep(0.1)
                alive = [p for p in alive if self._is_broker(p)]
            if alive:
                raise LocalKafkaError(f"broker process(es) {alive} survived SIGKILL")

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Returns False if it was not running. The data dir is kept; the next ``up`` resumes it.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.data_dir / ".lock"):
            pids = self._pids()
            if not pids:
                self.pid_file.unlink(missing_ok=True)
                return False
            started = time.monotonic()
            self._progress(f"stopping Kafka (pid {', '.join(map(str, pids))})…")
            self._stop(pids, timeout)
            self.pid_file.unlink(missing_ok=True)
            self._progress(f"Kafka stopped after {time.monotonic() - started:.1f} s")
            return True

    def status(self, timeout: float = 10.0) -> LocalStatus:
        """Whether the broker runs and, if it answers, its topics, end offsets and group lag."""
        pid = self.pid()
        answering = _listening(self.local.port) and ping(self.bootstrap, timeout=1.0)
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
