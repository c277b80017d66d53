"""Kafka tooling: a real single-node broker on the local machine, and its topics.

* :mod:`streamfolio.kafka.local` fetches Apache Kafka 4.x jars with Maven (once, into
  ``.cache/kafka/lib``, with :mod:`streamfolio.devtools`), formats KRaft storage and starts,
  stops and inspects one combined broker/controller on localhost with the machine's Java 17+.
* :mod:`streamfolio.kafka.admin` creates the configured topics and reports partitions, end offsets
  and consumer-group lag, against any cluster (confluent-kafka's ``AdminClient``).
* :mod:`streamfolio.kafka.cli` is ``streamfolio kafka up | down | status``.
"""
