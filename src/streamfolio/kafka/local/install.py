"""What a local broker needs before it starts: Java 17+, the Kafka jars, its properties file.

The jars are fetched once with Maven (:mod:`streamfolio.devtools.maven`) from
``tools/kafka/pom.xml`` into ``.cache/kafka/lib/<kafka_version>/`` of the checkout; the broker's
``server.properties`` is written from the settings on every start (:func:`server_properties`),
and a new cluster gets its id from :func:`cluster_id`. Every failure is a
:class:`LocalKafkaError` saying what to do.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from streamfolio.config import KafkaSettings
from streamfolio.devtools import java as devjava
from streamfolio.devtools import reraise_as
from streamfolio.devtools.files import find_checkout
from streamfolio.devtools.maven import cached_folder, find_mvn, run_maven
from streamfolio.errors import StreamfolioError

__all__ = [
    "HEAP",
    "LIB_DIR",
    "LOG4J_CONFIG",
    "MIN_JAVA",
    "POM",
    "LocalKafkaError",
    "Progress",
    "cluster_id",
    "fetch_kafka_jars",
    "find_java",
    "repo_root",
    "server_properties",
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

Progress = Callable[[str], None]


class LocalKafkaError(StreamfolioError):
    """The local broker cannot be fetched, started, reached or stopped. Says what to do."""


def repo_root(start: Path | None = None) -> Path:
    """The streamfolio checkout: the nearest folder at or above ``start`` (default: the working
    directory) that holds ``tools/kafka/pom.xml``, else the checkout this package runs from."""
    found = find_checkout(POM, start)
    if found is None:
        raise LocalKafkaError(
            f"no streamfolio checkout (with {POM}) at or above {(start or Path.cwd()).resolve()}; "
            "run this from the repository, where the pom that names the Kafka jars lives"
        )
    return found


def find_java() -> str:
    """The ``java`` to run: ``$JAVA_HOME/bin/java`` if set, else the one on ``PATH``.

    Raises :class:`LocalKafkaError` if there is none, or if it is older than :data:`MIN_JAVA`.
    """
    with reraise_as(LocalKafkaError):
        return devjava.find_java(MIN_JAVA, purpose="run Kafka")


def fetch_kafka_jars(
    root: Path, version: str, lib_dir: Path, progress: Progress = lambda _line: None
) -> Path:
    """Fetch the jars of Kafka ``version`` with Maven into ``lib_dir`` unless cached there;
    return ``lib_dir``.

    Runs ``mvn dependency:copy-dependencies`` on ``tools/kafka/pom.xml`` with
    ``-Dkafka.version``, into a scratch folder renamed into place when complete, so an
    interrupted fetch is simply redone.
    """

    def fill(partial: Path) -> None:
        pom = root / POM
        if not pom.is_file():
            raise LocalKafkaError(f"{pom} is missing; it names the Kafka jars to fetch")
        mvn = find_mvn(
            f"fetch the Kafka {version} jars from Maven Central into {lib_dir}", "put mvn on PATH"
        )
        progress(f"fetching Kafka {version} jars with Maven (first run only) into {lib_dir}…")
        started = time.monotonic()
        run_maven(
            mvn,
            pom,
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
            f"-Dkafka.version={version}",
            what=f"fetching the Kafka {version} jars",
            batch=True,
            timeout=1800,
            produces=partial / f"kafka_2.13-{version}.jar",
            hint=(
                f"is org.apache.kafka:kafka_2.13:{version} on Maven Central, and Maven Central "
                "reachable?"
            ),
        )
        jars = list(partial.glob("*.jar"))
        size = sum(j.stat().st_size for j in jars) / 1e6
        progress(f"fetched {len(jars)} jars ({size:.0f} MB) in {time.monotonic() - started:.1f} s")

    with reraise_as(LocalKafkaError):
        return cached_folder(lib_dir, version, fill)


def cluster_id() -> str:
    """A new KRaft cluster id.

    What ``StorageTool random-uuid`` prints (Kafka's Uuid.randomUuid: a random UUID in URL-safe
    base64 without padding, never starting with '-'), without paying for a JVM start.

    >>> len(cluster_id()), cluster_id().startswith("-")
    (22, False)
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def server_properties(settings: KafkaSettings, log_dirs: Path) -> str:
    """The broker's ``server.properties``: one combined broker/controller on localhost."""
    local = settings.local
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
            f"log.dirs={log_dirs}",
            f"num.partitions={settings.partitions}",
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
            # Record timestamps are event times, which the demo's simulator and every replay
            # put months in the past: time-based retention would delete those ticks at the
            # first check after a (re)start, under a job that restarts from its checkpoint.
            # A development broker keeps everything; `demo` empties its topics at each start.
            "log.retention.ms=-1",
            "",
        ]
    )
