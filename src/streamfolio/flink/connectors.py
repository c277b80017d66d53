"""Kafka sources and sinks of the job, and the connector jars they need.

Sources: the prices topic is a Kafka table (:mod:`streamfolio.flink.closes`); the control topics
(initial statistics, weights) are one ``KafkaSource`` each, values as raw bytes
(``ByteArraySchema``) decoded in Python with fastavro: PyFlink only offers value-only
deserializers, and keeping the bytes lets a message that does not decode go to the dead-letter
topic unchanged. Their watermarks come from :func:`control_watermarks`.

Sinks: Kafka tables (the SQL connector) with the ``raw`` format for key and value. PyFlink 2.2's
DataStream ``KafkaSink`` cannot take the record key from a field of the element (its
``RowFieldExtractorSchema`` arrives only in Flink 2.3), while the table sink writes column ``k``
as the key and ``v`` as the value, with the same delivery guarantees (``sink.delivery-guarantee``,
transactional id prefix, ``transaction.timeout.ms``).

Jars: the connector's fat jar ``flink-sql-connector-kafka`` is fetched once with Maven from
``tools/flink/pom.xml``, and ``sf_event_time`` (the job's one Java function) built from
``tools/flink/event-time``, into ``.cache/flink/lib`` of the checkout (:func:`fetch_jars`), or
taken from ``$STREAMFOLIO_FLINK_JARS`` (a folder, or jar paths separated by ``:``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from streamfolio.config import FlinkSettings, Settings
from streamfolio.devtools import reraise_as
from streamfolio.devtools.files import find_checkout
from streamfolio.devtools.maven import cached_folder, find_mvn, run_maven
from streamfolio.errors import StreamfolioError
from streamfolio.kafka.outage import RECONNECT_BACKOFF_MAX_MS, RECONNECT_BACKOFF_MS
from streamfolio.kafka.topics import Role, contract

if TYPE_CHECKING:
    from pyflink.common import WatermarkStrategy
    from pyflink.datastream import DataStream
    from pyflink.datastream.connectors.kafka import KafkaSource
    from pyflink.table import StatementSet, StreamTableEnvironment

__all__ = [
    "JARS_ENV",
    "LIB_DIR",
    "POM",
    "TRANSACTION_TIMEOUT_MS",
    "ConnectorError",
    "KafkaTableSinks",
    "client_properties",
    "control_watermarks",
    "fetch_jars",
    "find_root",
    "job_jars",
    "kafka_source",
    "sink_options",
    "source_parallelism",
]

POM = Path("tools/flink/pom.xml")
"""The Maven project naming the job's jars, relative to the checkout."""
EVENT_TIME_POM = Path("tools/flink/event-time/pom.xml")
"""The Maven project of ``sf_event_time``, the job's one Java function (docs/flink.md)."""
EVENT_TIME_JAR = "streamfolio-event-time.jar"
LIB_DIR = Path(".cache/flink/lib")
"""Where the fetched jars are cached, relative to the checkout (git-ignored)."""
JARS_ENV = "STREAMFOLIO_FLINK_JARS"
"""A folder of jars, or ``:``-separated jar paths, used instead of the fetched ones."""
TRANSACTION_TIMEOUT_MS = 900_000
SHADED_KAFKA = "org.apache.flink.kafka.shaded."
"""Where the connector jar (``flink-sql-connector-kafka``, a fat jar) relocated the Kafka client:
a class named in a property (the JAAS login module) must be named there."""
_KAFKA_CLASS = re.compile(r"(?<![\w.])org\.apache\.kafka\.")
"""Kafka transaction timeout of the exactly-once sinks: the broker's default maximum
(``transaction.max.timeout.ms``, 15 min). The connector's own default (1 h) is refused by a broker
with default settings."""

StartingOffsets = Literal["earliest", "latest"]


class ConnectorError(StreamfolioError):
    """The connector jars cannot be found or fetched. Says what to do."""


# ------------------------------------------------------------------------------------- jars


def find_root(start: Path | None = None) -> Path:
    """The streamfolio checkout: the nearest folder at or above ``start`` (default: the working
    directory) holding ``tools/flink/pom.xml``, else the checkout this package runs from."""
    found = find_checkout(POM, start)
    if found is None:
        raise ConnectorError(
            f"no streamfolio checkout (with {POM}) at or above {(start or Path.cwd()).resolve()}; "
            f"run from the repository, or set {JARS_ENV} to the folder holding "
            "flink-sql-connector-kafka-*.jar"
        )
    return found


def fetch_jars(root: Path, *, quiet: bool = True) -> Path:
    """Fetch the jars named by ``tools/flink/pom.xml`` and build ``sf_event_time`` into
    ``.cache/flink/lib`` (again only when those Maven projects change).

    Maven writes into a scratch folder that is renamed when complete, so an interrupted fetch
    never leaves a half-filled cache behind; two jobs started at once fetch once
    (:func:`streamfolio.devtools.maven.cached_folder`).
    """
    lib = (root / LIB_DIR).resolve()
    with reraise_as(ConnectorError):
        return cached_folder(
            lib, _sources_stamp(root), lambda into: _fetch(root, into, quiet=quiet)
        )


def _sources_stamp(root: Path) -> str:
    """A digest of the Maven projects: the cache is rebuilt when any of them changes."""
    digest = hashlib.sha256()
    sources = [root / POM, root / EVENT_TIME_POM]
    sources += sorted((root / EVENT_TIME_POM.parent / "src" / "main").rglob("*.java"))
    for path in sources:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _fetch(root: Path, into: Path, *, quiet: bool) -> None:
    """Fetch the jars of ``tools/flink/pom.xml`` and build ``sf_event_time`` into ``into``."""
    mvn = find_mvn(
        f"fetch the Kafka connector jar into {(root / LIB_DIR).resolve()}", f"set {JARS_ENV}"
    )
    run_maven(
        mvn,
        root / POM,
        "dependency:copy-dependencies",
        # Absolute: a relative output directory resolves against the pom's folder.
        f"-DoutputDirectory={into}",
        what="fetching the Flink connector jars",
        quiet=quiet,
    )
    built = root / EVENT_TIME_POM.parent / "target" / EVENT_TIME_JAR
    run_maven(
        mvn,
        root / EVENT_TIME_POM,
        "package",
        what=f"building {EVENT_TIME_JAR}",
        quiet=quiet,
        produces=built,
    )
    shutil.copy2(built, into)


def job_jars(*, fetch: bool = True, environ: dict[str, str] | None = None) -> list[Path]:
    """The jars the job needs: ``$STREAMFOLIO_FLINK_JARS``, else the checkout's cache (fetched
    on first use when ``fetch``)."""
    env = os.environ if environ is None else environ
    given = env.get(JARS_ENV)
    if given:
        paths = [Path(p) for p in given.split(os.pathsep) if p]
        jars = [j for p in paths for j in (sorted(p.glob("*.jar")) if p.is_dir() else [p])]
    else:
        root = find_root()
        lib = (root / LIB_DIR).resolve()
        if fetch:
            lib = fetch_jars(root)
        jars = sorted(lib.glob("*.jar")) if lib.is_dir() else []
    missing = [j for j in jars if not j.is_file()]
    if missing:
        raise ConnectorError(f"jar(s) not found: {', '.join(map(str, missing))}")
    if not any(j.name.startswith("flink-sql-connector-kafka") for j in jars):
        raise ConnectorError(
            "no flink-sql-connector-kafka jar among "
            f"{[str(j) for j in jars] or 'none'}; run `streamfolio job run` from the checkout "
            f"(it fetches it with Maven) or set {JARS_ENV}"
        )
    if not any(j.name == EVENT_TIME_JAR for j in jars):
        raise ConnectorError(
            f"no {EVENT_TIME_JAR} among {[str(j) for j in jars]}; run `streamfolio job run` from "
            f"the checkout (it builds it with Maven from {EVENT_TIME_POM}) or add it to {JARS_ENV}"
        )
    return jars


# ---------------------------------------------------------------------------------- sources


def control_watermarks(flink: FlinkSettings) -> WatermarkStrategy:
    """Watermarks of the decoded control messages (initial statistics, weights), per task.

    They order the control messages among the bars, never the prices watermark (SEMANTICS §4):
    the portfolio step processes a bar only once every control task has passed the bar's end
    with the ``timestamp`` of what it has read, or has been idle for
    ``flink.control_idleness_ms``. So at start, after a restore, and when a backlog of control
    messages is read, each takes effect in its place among the bars, whatever the order in
    which the job happens to read the topics; a control task that has nothing to read stops
    holding anything back after that time. Generated after decoding, in the task, from records
    that have passed it (a watermark never overtakes a message still being decoded), and per
    task rather than per partition: a reader the source gave no partition (after a restore,
    say) would otherwise hold the watermark for good.
    """
    from pyflink.common import Duration, WatermarkStrategy

    from streamfolio.flink.operators import ControlTime

    return (
        WatermarkStrategy.for_monotonous_timestamps()
        .with_idleness(Duration.of_millis(flink.control_idleness_ms))
        # Last: PyFlink's with_idleness returns a strategy without the Python assigner.
        .with_timestamp_assigner(ControlTime())
    )


def source_parallelism(settings: Settings, role: Role, parallelism: int) -> int:
    """How many tasks read the topic of ``role``: ``parallelism``, but no more than its
    partitions (asked of the broker; the configured count if it does not answer).

    Without idleness, a reader given no partition holds the watermark at its start for ever
    (nothing tells it that it has no data), so extra readers would stall the job. Each reader's
    own steps run at its parallelism too, chained to it: a redistribution between a reader and
    the step that follows would mix the order of its partitions, which lateness, ties and
    control messages depend on.
    """
    from streamfolio.kafka.admin import partition_count

    found = partition_count(
        settings.kafka.bootstrap_servers,
        contract(settings, role).name,
        config=settings.kafka.client_config("job"),
    )
    return min(parallelism, found if found is not None else settings.kafka.partitions)


def client_properties(settings: Settings) -> dict[str, str]:
    """Properties of every Java Kafka client of the job (sources, sinks, the SQL tables).

    Reconnection backs off exponentially from 100 ms to 10 s, as the Python components' clients
    do (:mod:`streamfolio.kafka.outage`): the Java client's default cap of 1 s would try every
    broker every second through an outage. Then the job principal's security properties
    (``KafkaSettings.java_properties``: the JAAS line, the PEM truststore) and ``kafka.java``.

    >>> from streamfolio.config import example_config_path, load_config
    >>> p = client_properties(load_config(example_config_path(), environ={}))
    >>> p["reconnect.backoff.ms"], p["reconnect.backoff.max.ms"]
    ('100', '10000')
    """
    properties = {
        "reconnect.backoff.ms": str(RECONNECT_BACKOFF_MS),
        "reconnect.backoff.max.ms": str(RECONNECT_BACKOFF_MAX_MS),
        **settings.kafka.java_properties("job"),
    }
    return {key: shaded(key, value) for key, value in properties.items()}


def shaded(key: str, value: str) -> str:
    """``value`` with the Kafka client's classes named as the connector jar relocated them,
    where ``key`` names classes (the JAAS line, ``*.class``); other values as they are.

    >>> shaded("sasl.jaas.config", 'org.apache.kafka.common.security.plain.PlainLoginModule '
    ...        'required username="u" password="org.apache.kafka.x";')[:68]
    'org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain'
    >>> shaded("sasl.jaas.config", shaded("sasl.jaas.config", "org.apache.kafka.A required;"))
    'org.apache.flink.kafka.shaded.org.apache.kafka.A required;'
    >>> shaded("client.rack", "org.apache.kafka.x")
    'org.apache.kafka.x'
    """
    if key != "sasl.jaas.config" and not key.endswith(".class"):
        return value
    if key == "sasl.jaas.config":
        # Only the login module, before "required": a password may hold any text.
        module, sep, options = value.partition(" ")
        return _KAFKA_CLASS.sub(SHADED_KAFKA + "org.apache.kafka.", module) + sep + options
    return _KAFKA_CLASS.sub(SHADED_KAFKA + "org.apache.kafka.", value)


def kafka_source(
    settings: Settings,
    role: Role,
    *,
    starting: StartingOffsets,
    bounded: bool = False,
    whole: bool = False,
) -> KafkaSource:
    """A source of one input topic's raw values, or with ``whole`` of its whole records
    (partition, offset, key and value as one byte array: ``operators.kafka_record``).

    ``bounded`` stops at the end offsets found when the job starts, so a finite run ends, and
    Flink then closes every open window as the replay's flush does.
    """
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    topic = contract(settings, role).name
    initializer = (
        KafkaOffsetsInitializer.earliest()
        if starting == "earliest"
        else KafkaOffsetsInitializer.latest()
    )
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap_servers)
        .set_topics(topic)
        .set_group_id(f"{settings.kafka.client_id}-job")
        .set_client_id_prefix(f"{settings.kafka.client_id}-job-{role}")
        .set_starting_offsets(initializer)
        # Transactional producers (the rebalancer, an exactly-once upstream) are read only
        # once committed.
        .set_property("isolation.level", "read_committed")
    )
    if whole:
        # PyFlink only wraps value-only deserializers; this one is the job's own Java class.
        from pyflink.java_gateway import get_gateway

        builder._j_builder.setDeserializer(
            get_gateway().jvm.io.streamfolio.flink.KafkaRecordBytes()
        )
    else:
        builder = builder.set_value_only_deserializer(ByteArraySchema())
    for key, value in client_properties(settings).items():
        builder = builder.set_property(key, value)
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return builder.build()


# ------------------------------------------------------------------------------------ sinks


def sink_options(
    settings: Settings,
    role: Role,
    *,
    keyed: bool,
    delivery: Literal["at-least-once", "exactly-once"],
    transactional_id_prefix: str,
) -> dict[str, str]:
    """The Kafka table options of the sink writing topic ``role``.

    >>> from streamfolio.config import example_config_path, load_config
    >>> o = sink_options(load_config(example_config_path(), environ={}), "metrics", keyed=True,
    ...                  delivery="exactly-once", transactional_id_prefix="sf")
    >>> o["topic"], o["key.fields"], o["sink.transactional-id-prefix"]
    ('portfMetrics', 'k', 'sf-metrics')
    >>> o["properties.transaction.timeout.ms"], o["properties.reconnect.backoff.max.ms"]
    ('900000', '10000')
    """
    options = {
        "topic": contract(settings, role).name,
        "properties.bootstrap.servers": settings.kafka.bootstrap_servers,
        "properties.client.id": f"{settings.kafka.client_id}-job-{role}",
        "value.format": "raw",
        "sink.delivery-guarantee": delivery,
    }
    if keyed:
        options.update(
            {"key.format": "raw", "key.fields": "k", "value.fields-include": "EXCEPT_KEY"}
        )
    if delivery == "exactly-once":
        # One prefix per sink: transactional ids must not collide between the sinks.
        options["sink.transactional-id-prefix"] = f"{transactional_id_prefix}-{role}"
        options["properties.transaction.timeout.ms"] = str(TRANSACTION_TIMEOUT_MS)
    options.update({f"properties.{k}": v for k, v in client_properties(settings).items()})
    return options


class KafkaTableSinks:
    """Writes streams of ``Row(k, v)`` (key and value bytes) or of value bytes to Kafka topics.

    Each :meth:`add` registers one ``INSERT`` in a statement set; :meth:`attach` adds them all
    to the DataStream job, which then runs with ``env.execute()`` as one job.
    """

    def __init__(
        self,
        t_env: StreamTableEnvironment,
        settings: Settings,
        *,
        delivery: Literal["at-least-once", "exactly-once"],
        transactional_id_prefix: str,
    ) -> None:
        self._t_env = t_env
        self._settings = settings
        self._delivery = delivery
        self._prefix = transactional_id_prefix
        self._statements: StatementSet = t_env.create_statement_set()

    def add(self, stream: DataStream, role: Role, *, keyed: bool) -> None:
        """Write ``stream`` (``Row(k, v)`` if ``keyed``, else value bytes) to topic ``role``."""
        from pyflink.table import DataTypes, Schema, TableDescriptor

        if keyed:
            schema = (
                Schema.new_builder()
                .column("k", DataTypes.BYTES())
                .column("v", DataTypes.BYTES())
                .build()
            )
        else:
            schema = Schema.new_builder().column("v", DataTypes.BYTES()).build()
        descriptor = TableDescriptor.for_connector("kafka").schema(schema)
        options = sink_options(
            self._settings,
            role,
            keyed=keyed,
            delivery=self._delivery,
            transactional_id_prefix=self._prefix,
        )
        for key, value in options.items():
            descriptor = descriptor.option(key, value)
        table = self._t_env.from_data_stream(stream)
        if not keyed:
            table = table.alias("v")
        self._statements.add_insert(descriptor.build(), table)

    def attach(self) -> None:
        """Add the sinks to the DataStream job (call once, after the last :meth:`add`)."""
        self._statements.attach_as_datastream()
