"""Real Apache Kafka 4.x brokers on this machine, without Docker: one development broker, or a
secured multi-broker cluster like production.

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

:class:`LocalCluster` runs ``kafka.local.brokers`` combined nodes instead (static quorum,
replicated topics), secured when ``kafka.security.protocol`` is SASL_SSL or SASL_PLAINTEXT: SCRAM
logins for the components, mutual TLS between the nodes, and ACLs per component principal
(:mod:`~streamfolio.kafka.local.cluster`, ``docs/kafka-cluster.md``). :func:`wants_cluster` says
which of the two a configuration asks for.

Modules: :mod:`~streamfolio.kafka.local.install` (Java, jars, ``server.properties``),
:mod:`~streamfolio.kafka.local.processes` (finding, starting and stopping the JVM, probing
ports), :mod:`~streamfolio.kafka.local.broker` (:class:`LocalKafka` itself); for the cluster
:mod:`~streamfolio.kafka.local.nodes` (ports, ``server.properties``),
:mod:`~streamfolio.kafka.local.launch` (formatting, starting),
:mod:`~streamfolio.kafka.local.tls` (certificates), :mod:`~streamfolio.kafka.local.scram` (users,
passwords), :mod:`~streamfolio.kafka.local.access` (the ACL table),
:mod:`~streamfolio.kafka.local.cluster_admin` (admin API calls) and
:mod:`~streamfolio.kafka.local.cluster_status` (what it reports). Java and Maven themselves are
found and run by :mod:`streamfolio.devtools`.
"""

from __future__ import annotations

from streamfolio.kafka.local.broker import LocalKafka, LocalStatus, UpResult
from streamfolio.kafka.local.cluster import LocalCluster, wants_cluster
from streamfolio.kafka.local.cluster_status import ClusterStatus, ClusterUpResult
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
    "ClusterStatus",
    "ClusterUpResult",
    "LocalCluster",
    "LocalKafka",
    "LocalKafkaError",
    "LocalStatus",
    "UpResult",
    "find_java",
    "repo_root",
    "wants_cluster",
]
