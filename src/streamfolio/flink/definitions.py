"""Portfolios as data in the job: the portfolios topic's records → definition control messages
(:class:`DecodeDefinitions`) and the shard memberships they change (:func:`membership_changes`).

A definition stamped T takes effect for every bar ending after T (docs/semantics.md,
"Portfolios as data"): :class:`~streamfolio.flink.prices.GatherBars` sends the bar to the
portfolios that are members of its shard then, and
:class:`~streamfolio.flink.operators.PortfolioProcess` computes it with the spec in force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from pyflink.datastream import FlatMapFunction, ProcessFunction

from streamfolio.config import Settings
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.errors import ConfigError, SchemaError
from streamfolio.flink.dead_letters import DeadLetterLog
from streamfolio.flink.records import (
    ControlMessage,
    MembershipChange,
    kafka_record,
    kafka_record_time,
)
from streamfolio.flink.routing import shard_of
from streamfolio.messages import PortfolioDefinition
from streamfolio.portfolios import portfolio_of, portfolio_spec
from streamfolio.serde import codec_for

__all__ = [
    "DecodeDefinitions",
    "MembershipChanges",
    "membership_changes",
    "spec_from_record",
    "spec_record",
    "without_secrets",
]


def without_secrets(settings: Settings) -> Settings:
    """What validating a definition needs (exchange, defaults, universe, bar sizes), with no
    credential or notification URL: it is shipped inside the job.

    >>> from streamfolio.config import example_config_path, load_config
    >>> plain = without_secrets(load_config(example_config_path(), environ={}))
    >>> plain.kafka.security.username, [p.notify for p in plain.portfolios][:1]
    (None, [()])
    """
    from streamfolio.config.sections import KafkaSettings

    return settings.model_copy(
        update={
            "kafka": KafkaSettings(),
            "defaults": settings.defaults.model_copy(update={"notify": ()}),
            "portfolios": tuple(p.model_copy(update={"notify": ()}) for p in settings.portfolios),
        }
    )


def spec_record(spec: PortfolioSpec) -> dict[str, Any]:
    """A spec as plain data (what a definition message carries through the job).

    >>> spec = PortfolioSpec("p", ("A",), 60_000, 252.0, bounds=((0.0, 1.0),))
    >>> spec_from_record(spec_record(spec)) == spec
    True
    """
    return dataclasses.asdict(spec)


def spec_from_record(record: dict[str, Any]) -> PortfolioSpec:
    """The inverse of :func:`spec_record`."""
    bounds = record.get("bounds")
    return PortfolioSpec(
        **{
            **record,
            "tickers": tuple(record["tickers"]),
            "bounds": None if bounds is None else tuple(tuple(b) for b in bounds),
        }
    )


class DecodeDefinitions(ProcessFunction):  # type: ignore[misc]
    """Whole records of the portfolios topic → ``definition``
    :class:`~streamfolio.flink.records.ControlMessage`: ``{"timestamp": T, "spec": ...}``, or
    ``spec`` None for a tombstone (a removal at its Kafka timestamp). A definition the
    configuration's validation refuses (or that cannot be decoded) is dead-lettered as
    ``invalid_definition`` and changes nothing.
    """

    def __init__(self, settings: Settings, source_topic: str) -> None:
        self.settings = without_secrets(settings)
        self.source_topic = source_topic

    def open(self, runtime_context: Any = None) -> None:
        self._codec = codec_for("PortfolioDefinition")
        self._dead = DeadLetterLog("decode definitions")

    def process_element(self, value: bytes, ctx: Any = None) -> Iterator[Any]:
        partition, offset, key, payload = kafka_record(value)
        where: dict[str, Any] = {"partition": partition, "offset": offset, "key": key}
        if not payload:
            portfolio_id = (key or b"").decode("utf-8", "replace")
            timestamp = kafka_record_time(value)
            if not portfolio_id or timestamp is None:
                yield self._dead(
                    "invalid_definition",
                    "a tombstone without a key",
                    self.source_topic,
                    b"",
                    **where,
                )
                return
            removal: dict[str, Any] = {"timestamp": timestamp, "spec": None}
            yield ControlMessage(portfolio_id, "definition", removal, b"", partition, offset, key)
            return
        try:
            definition = PortfolioDefinition.from_record(self._codec.decode(payload))
            # Where the owner is notified is the rebalancer's business (and its environment's).
            plain = dataclasses.replace(definition, notify=())
            portfolio = portfolio_of(plain, self.settings, environ={})
        except (SchemaError, ConfigError) as exc:
            yield self._dead("invalid_definition", str(exc), self.source_topic, payload, **where)
            return
        if key is not None and key != definition.portfolio_id.encode():
            detail = f"key {key!r} is not the portfolio id {definition.portfolio_id!r}"
            yield self._dead("key_mismatch", detail, self.source_topic, payload, **where)
            return
        spec = portfolio_spec(portfolio, self.settings.exchange)
        record: dict[str, Any] = {"timestamp": definition.timestamp, "spec": spec_record(spec)}
        yield ControlMessage(
            definition.portfolio_id, "definition", record, payload, partition, offset, key
        )


def membership_changes(
    message: ControlMessage, bar_sizes_ms: Sequence[int]
) -> Iterator[MembershipChange]:
    """What a definition does to the shards: it joins the shard of its bar size with its
    tickers and leaves that of every other bar size (a removal leaves them all).

    >>> message = ControlMessage("p", "definition", {"timestamp": 5, "spec": spec_record(
    ...     PortfolioSpec("p", ("A",), 60_000, 252.0))}, b"", 0, 0, b"p")
    >>> [(c.shard.split("|")[0], c.tickers) for c in membership_changes(message, [60_000, 300_000])]
    [('60000', ('A',)), ('300000', None)]
    """
    spec = message.record["spec"]
    shard = shard_of(message.portfolio_id)
    for bar_ms in bar_sizes_ms:
        joins = spec is not None and spec["bar_ms"] == bar_ms
        yield MembershipChange(
            f"{bar_ms}|{shard}",
            message.portfolio_id,
            int(message.record["timestamp"]),
            tuple(spec["tickers"]) if joins else None,
        )


class MembershipChanges(FlatMapFunction):  # type: ignore[misc]
    """:func:`membership_changes` as the job's flat map over the decoded definitions (the
    other control messages pass through it as nothing)."""

    def __init__(self, bar_sizes_ms: Sequence[int]) -> None:
        self.bar_sizes_ms = tuple(bar_sizes_ms)

    def flat_map(self, value: ControlMessage) -> Iterator[MembershipChange]:
        return membership_changes(value, self.bar_sizes_ms)
