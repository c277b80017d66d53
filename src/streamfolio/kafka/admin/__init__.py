"""Topics of a Kafka cluster: create the configured ones, report offsets and consumer-group lag.

Works against any cluster; ``config`` carries extra librdkafka properties (SASL, TLS), e.g.
``KafkaSettings.client_config("admin")``.

* :mod:`~streamfolio.kafka.admin.specs`: the topics the configuration names (:func:`topic_specs`);
* :mod:`~streamfolio.kafka.admin.ensure`: creating and growing them (:func:`ensure_topics`),
  reading their configs (:func:`topic_config`);
* :mod:`~streamfolio.kafka.admin.report`: partitions, offsets and group lag (:func:`describe`);
* :mod:`~streamfolio.kafka.admin.client`: the ``AdminClient``, :func:`ping`,
  :func:`partition_count` and the error every failure raises, :class:`KafkaAdminError`.
"""

from __future__ import annotations

from streamfolio.kafka.admin.client import KafkaAdminError, admin_client, partition_count, ping
from streamfolio.kafka.admin.ensure import EnsureResult, ensure_topics, topic_config
from streamfolio.kafka.admin.report import (
    GroupLag,
    PartitionLag,
    PartitionState,
    TopicReport,
    TopicState,
    describe,
)
from streamfolio.kafka.admin.specs import ANY_TIMESTAMP, KEEP_FOREVER, TopicSpec, topic_specs

__all__ = [
    "ANY_TIMESTAMP",
    "KEEP_FOREVER",
    "EnsureResult",
    "GroupLag",
    "KafkaAdminError",
    "PartitionLag",
    "PartitionState",
    "TopicReport",
    "TopicSpec",
    "TopicState",
    "admin_client",
    "describe",
    "ensure_topics",
    "partition_count",
    "ping",
    "topic_config",
    "topic_specs",
]
