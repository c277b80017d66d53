"""The topics the project needs: :func:`topic_specs` turns the configured topic names into
:class:`TopicSpec` (name, partitions, replication factor, topic configs).

>>> from streamfolio.config import example_config_path, load_config
>>> specs = topic_specs(load_config(example_config_path(), environ={}))
>>> [(s.name, s.partitions, dict(s.configs)) for s in specs][1:3]
[('portfStats', 3, {...'retention.ms': '-1'}), ('Weights', 3, {...'retention.ms': '-1'})]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamfolio.config import Settings

__all__ = ["ANY_TIMESTAMP", "COMPACTED", "KEEP_FOREVER", "TopicSpec", "topic_specs"]

KEEP_FOREVER = {"retention.ms": "-1"}
ANY_TIMESTAMP = {"message.timestamp.after.max.ms": str(2**63 - 1)}
"""Topic configs for the topics that are a service's memory: the rebalancer rebuilds its latest
weights per portfolio from ``weights`` and the job its starting statistics from ``initial_stats``,
so these must outlive the default 7 days. Delete policy (not compact) keeps the full history."""

COMPACTED = {"cleanup.policy": "compact", "retention.ms": "-1"}
"""The portfolio definitions: the latest definition of every portfolio is kept for ever, older
ones and those a tombstone removed go (what a reader at the start of the topic must know)."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the project needs: name, partition count, replication factor and topic configs."""

    name: str
    partitions: int
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics ``settings`` names, each with ``kafka.partitions`` partitions.

    Every role gets the same partition count, the dead-letter topic included, so that keyed
    records of one portfolio or ticker stay in one partition across topics. ``weights`` and
    ``initial_stats`` keep their records forever (:data:`KEEP_FOREVER`); ``portfolios`` is
    compacted (:data:`COMPACTED`). Record timestamps are
    event times, which a replay or a sped-up simulation puts far from the wall clock, so no
    topic refuses a timestamp for being in the future (Kafka 4 refuses beyond one hour by
    default, :data:`ANY_TIMESTAMP`).
    """
    topics = settings.topics
    # The rebalancer rebuilds its memory from the weights and events topics: keep them.
    kept = {topics.weights, topics.initial_stats, topics.rebalance_events}
    return [
        TopicSpec(
            name=name,
            partitions=settings.kafka.partitions,
            replication_factor=settings.kafka.replication_factor,
            configs={
                **ANY_TIMESTAMP,
                **(KEEP_FOREVER if name in kept else {}),
                **(COMPACTED if name == topics.portfolios else {}),
            },
        )
        for name in topics.model_dump().values()
    ]
