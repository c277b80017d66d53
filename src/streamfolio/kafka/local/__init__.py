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

Modules: :mod:`~streamfolio.kafka.local.install` (Java, jars, ``server.properties``),
:mod:`~streamfolio.kafka.local.processes` (finding, starting and stopping the JVM, probing
ports), :mod:`~streamfolio.kafka.local.broker` (:class:`LocalKafka` itself). Java and Maven
themselves are found and run by :mod:`streamfolio.devtools`.
"""

from __future__ import annotations

from streamfolio.kafka.local.broker import LocalKafka, LocalStatus, UpResult
from streamfolio.kafka.local.install import (
    HEAP,
    LIB_DIR,
    LOG4J_CONFIG,
    MIN_JAVA,
    POM,
    LocalKafkaError,
    find_java,
    repo_root,
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
