"""The sections of the settings that are not portfolios: the exchange and its calendar, Kafka and
its local broker, topic names, the streaming job, what components accept from topics, the
rebalancer service, and price feeds (heartbeats).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from streamfolio.config.base import StrictModel, invalid
from streamfolio.config.kafka_security import Component, KafkaSecurity
from streamfolio.core.calendar import CSE, ExchangeCalendar, parse_hhmm

_TOPIC = re.compile(r"[A-Za-z0-9._\-]{1,249}")


class ExchangeSettings(StrictModel):
    """The exchange: clock, session hours, and holidays beyond the built-in list.

    ``name: CSE`` uses the built-in Casablanca holidays (``core.calendar.CSE``); any other name
    starts from none. Ramadan hours (e.g. ``"10:00"`` to ``"13:30"``) are set here for the month.
    """

    name: str = "CSE"
    timezone: str = "Africa/Casablanca"
    session_open: str = "09:30"
    session_close: str = "15:30"
    trading_days_per_year: Annotated[float, Field(gt=0, le=366)] = 246.0
    extra_holidays: tuple[dt.date, ...] = ()
    universe: tuple[str, ...] = ()
    """Tickers a portfolio added while the job runs may hold, besides those of the configured
    portfolios (the job computes bars for all of them from the start; a tick of any other
    ticker is dead-lettered as unknown)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise invalid(
                f"unknown time zone {value!r}", "an IANA name such as Africa/Casablanca"
            ) from None
        return value

    @field_validator("session_open", "session_close", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 10:00 as the base-60 number 600.
            raise invalid(f"YAML read this time as the number {value}", 'quote it: "10:00"')
        if isinstance(value, str):
            try:
                parse_hhmm(value)
            except ValueError as exc:
                raise invalid(str(exc), 'write local time as "HH:MM", e.g. "09:30"') from None
        return value

    @model_validator(mode="after")
    def _open_before_close(self) -> ExchangeSettings:
        if parse_hhmm(self.session_open) >= parse_hhmm(self.session_close):
            raise invalid(
                f"session_open {self.session_open} is not before session_close "
                f"{self.session_close}",
                "the session runs from session_open to session_close, same day",
                "session_close",
            )
        return self

    def calendar(self) -> ExchangeCalendar:
        """The :class:`~streamfolio.core.calendar.ExchangeCalendar` these settings describe.

        >>> ExchangeSettings(extra_holidays=["2026-11-20"]).calendar().holidays - CSE.holidays
        frozenset({datetime.date(2026, 11, 20)})
        """
        base = CSE if self.name == "CSE" else ExchangeCalendar(name=self.name)
        return ExchangeCalendar(
            name=self.name,
            timezone=self.timezone,
            session_open=parse_hhmm(self.session_open),
            session_close=parse_hhmm(self.session_close),
            weekend=base.weekend,
            holidays=base.holidays | frozenset(self.extra_holidays),
            annual_holidays=base.annual_holidays,
            trading_days_per_year=self.trading_days_per_year,
        )


class LocalKafkaSettings(StrictModel):
    """The KRaft brokers the project's tooling starts for development and tests: one combined
    broker/controller by default, or a cluster of ``brokers`` nodes, node ``i`` (from 0)
    listening on ``port + i`` (clients), ``internal_port + i`` (between brokers) and
    ``controller_port + i`` (the KRaft quorum)."""

    port: Annotated[int, Field(ge=1, le=65535)] = 9092
    controller_port: Annotated[int, Field(ge=1, le=65535)] = 9093
    internal_port: Annotated[int, Field(ge=1, le=65535)] = 9094
    brokers: Annotated[int, Field(ge=1, le=9)] = 1
    kafka_version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")] = "4.1.1"
    data_dir: Path = Path(".cache/kafka")

    @model_validator(mode="after")
    def _ports_apart(self) -> LocalKafkaSettings:
        ranges = {
            "port": self.port,
            "controller_port": self.controller_port,
            "internal_port": self.internal_port,
        }
        for key, first in ranges.items():
            if first + self.brokers - 1 > 65535:
                raise invalid(f"{key} + brokers - 1 is past 65535", f"lower {key}", key)
            for other, start in ranges.items():
                if other != key and start <= first < start + self.brokers:
                    raise invalid(
                        f"{key} {first} falls in the {other} range {start}..."
                        f"{start + self.brokers - 1} of {self.brokers} broker(s)",
                        "give each listener its own range of ports",
                        key,
                    )
        return self


class KafkaSettings(StrictModel):
    """How to reach Kafka. ``security`` says how to authenticate (typed, for both client stacks:
    :mod:`~streamfolio.config.kafka_security`); ``librdkafka`` and ``java`` pass raw properties
    to the Python components' clients and to the job's, over what ``security`` sets. All three
    are kept as secrets (masked in dumps and reprs): set passwords from the environment or files.
    """

    bootstrap_servers: Annotated[str, Field(min_length=1)] = "localhost:9092"
    partitions: Annotated[int, Field(ge=1)] = 3
    replication_factor: Annotated[int, Field(ge=1)] = 1
    client_id: Annotated[str, Field(min_length=1)] = "streamfolio"
    security: KafkaSecurity = KafkaSecurity()
    librdkafka: dict[str, SecretStr] = Field(default_factory=dict)
    java: dict[str, SecretStr] = Field(default_factory=dict)
    local: LocalKafkaSettings = LocalKafkaSettings()

    @field_validator("librdkafka", "java")
    @classmethod
    def _no_shadowing(
        cls, value: dict[str, SecretStr], info: ValidationInfo
    ) -> dict[str, SecretStr]:
        for key in ("bootstrap.servers", "client.id"):
            if key in value:
                raise invalid(
                    f"{key!r} belongs in kafka.{key.replace('.', '_')}",
                    f"move it out of kafka.{info.field_name}",
                    key,
                )
        return value

    def client_config(self, component: Component) -> dict[str, str]:
        """librdkafka properties for ``component``'s producers, consumers and admin clients,
        secrets revealed.

        >>> KafkaSettings(librdkafka={"socket.timeout.ms": "5000"}).client_config("feed")
        {'bootstrap.servers': 'localhost:9092', 'client.id': 'streamfolio-feed', \
'security.protocol': 'PLAINTEXT', 'socket.timeout.ms': '5000'}
        """
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"{self.client_id}-{component}",
            **self.security.librdkafka(component),
            **{k: v.get_secret_value() for k, v in self.librdkafka.items()},
        }

    def java_properties(self, component: Component = "job") -> dict[str, str]:
        """Java client properties for ``component`` (the job), without ``bootstrap.servers``,
        which the Flink connectors take apart; secrets revealed.

        >>> KafkaSettings(java={"request.timeout.ms": "5000"}).java_properties()
        {'security.protocol': 'PLAINTEXT', 'request.timeout.ms': '5000'}
        """
        return {
            **self.security.java(component),
            **{k: v.get_secret_value() for k, v in self.java.items()},
        }


class TopicSettings(StrictModel):
    """Kafka topic names. The defaults are the reference project's, for wire compatibility."""

    prices: str = "intraday-stock-prices"
    initial_stats: str = "portfStats"
    weights: str = "Weights"
    updated_stats: str = "portfUpdatedStats"
    metrics: str = "portfMetrics"
    rebalance_events: str = "rebalanceEvents"
    dead_letter: str = "deadLetters"
    portfolios: str = "portfolioDefinitions"
    """The portfolio definitions (compacted, keyed by portfolio id): portfolios as data."""

    @field_validator("*")
    @classmethod
    def _legal_name(cls, value: str) -> str:
        if not _TOPIC.fullmatch(value) or value in {".", ".."}:
            raise invalid(
                f"{value!r} is not a legal Kafka topic name",
                "use up to 249 letters, digits, '.', '_' or '-'",
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> TopicSettings:
        seen: dict[str, str] = {}
        for role, name in self.model_dump().items():
            if name in seen:
                raise invalid(
                    f"topic {name!r} is used both for {seen[name]} and for {role}",
                    "give every role its own topic",
                    role,
                )
            seen[name] = role
        return self


class FlinkClusterSettings(StrictModel):
    """The local Flink standalone session cluster of ``streamfolio flink up``: one JobManager and
    ``taskmanagers`` TaskManagers of ``slots`` slots each, separate JVMs on this machine, their
    REST API and RPC on localhost only. ``data_dir`` (relative to the checkout) holds its
    configuration, logs and savepoints. Memory sizes are Flink's (``1536m``, ``2g``): each JVM's
    whole process, small enough to run beside three Kafka brokers on 2 cores (docs/flink.md)."""

    rest_port: Annotated[int, Field(ge=1, le=65535)] = 8081
    rpc_port: Annotated[int, Field(ge=1, le=65535)] = 6123
    taskmanagers: Annotated[int, Field(ge=1, le=32)] = 2
    slots: Annotated[int, Field(ge=1, le=64)] = 1
    jobmanager_memory: Annotated[str, Field(pattern=r"^\d+[kmg]$")] = "1024m"
    taskmanager_memory: Annotated[str, Field(pattern=r"^\d+[kmg]$")] = "1536m"
    data_dir: Path = Path(".cache/flink-cluster")


class FlinkSettings(StrictModel):
    """The streaming job: event time, checkpoints and delivery guarantees."""

    parallelism: Annotated[int, Field(ge=1)] = 1
    max_out_of_orderness_ms: Annotated[int, Field(ge=0)] = 2000
    idleness_ms: Annotated[int, Field(ge=0)] = 0
    """Ignored (the job logs a warning when it is set): watermarks come from the data alone,
    and a quiet partition is moved by heartbeats. Processing-time idleness let Flink's windows
    drop ticks nobody had judged late; producers without heartbeats run next to
    ``streamfolio feed --source heartbeats`` instead (docs/flink.md). Kept so that existing
    configurations load."""
    bar_seconds: tuple[Annotated[int, Field(gt=0)], ...] = ()
    """Bar sizes the job computes besides those of the configured portfolios: a portfolio
    added while it runs must use one of them (they are operators of the job, fixed at start)."""
    control_idleness_ms: Annotated[int, Field(ge=1)] = 5000
    """How long a control-topic reader with nothing (more) to read holds the portfolio step
    back: at start, after a restore and after each control message, so that control messages
    take effect in their place among the bars whatever the order the topics are read in."""
    stats_every_bars: Annotated[int, Field(ge=1)] = 1
    """Updated statistics are emitted for the bars whose index is a multiple of this (1: every
    bar); metrics still for every bar. Each statistics record carries the whole covariance
    matrix, so with thousands of portfolios they cost more than everything else per bar
    (docs/semantics.md, BENCHMARKS.md)."""
    stats_layout: Literal["maps", "packed"] = "maps"
    """How updated statistics carry the moments: ``maps``, the reference's ``meanReturns`` and
    ``covarianceMatrix`` (ticker -> value), or ``packed``, the means and the covariance's upper
    triangle as arrays in ``tickers`` order (``packed_means``, ``packed_covariance``): 2 kB
    instead of 5 kB for 20 tickers. Every streamfolio reader takes either; a consumer of the
    reference's layout needs ``maps``."""
    checkpoint_interval_ms: Annotated[int, Field(ge=1)] = 10_000
    checkpoint_dir: Path = Path(".cache/flink/checkpoints")
    state_backend: Literal["hashmap", "rocksdb"] = "hashmap"
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"
    starting_offsets: Literal["latest", "earliest"] = "latest"
    price_format: Literal["tick", "bourse"] = "tick"
    cluster: FlinkClusterSettings = FlinkClusterSettings()


class ValidationSettings(StrictModel):
    """What every component accepts from a topic, beyond the schema (docs/trust.md).

    A record that breaks a rule changes no state, and goes to the dead-letter topic with a
    machine-readable reason (the dashboard, which only reads, ignores and counts it).
    """

    max_future_skew_ms: Annotated[int, Field(ge=0)] = 300_000
    """A record stamped further than this ahead of the reading component's wall clock is
    refused (``future``), on every topic; a price or heartbeat then moves no watermark. History
    is in the past, so replays of it pass; a simulation that runs faster than real time needs a
    larger value (``examples/demo.yaml``)."""
    max_stats_count: Annotated[int, Field(ge=1)] = 10_000_000
    """Initial statistics claiming more bars than this are refused (``invalid_stats``): a huge
    count would pin a portfolio's mean and Sharpe ratio whatever the market does. Ten million
    one-second bars is about eleven years of CSE sessions."""
    covariance_tolerance: Annotated[float, Field(gt=0, lt=1)] = 1e-9
    """A covariance matrix is accepted as positive semi-definite when its smallest eigenvalue
    is at least ``-covariance_tolerance`` times its largest variance (round-off, not data)."""


class RebalancerSettings(StrictModel):
    """The rebalancer service."""

    group_id: Annotated[str, Field(min_length=1)] = "streamfolio-rebalancer"


class FeedSettings(StrictModel):
    """Price feeds (``streamfolio feed``): heartbeats on the prices topic (SEMANTICS.md §4).

    A heartbeat says "nothing with an event time older than T follows on this partition"; a
    feed sends one on every partition of the prices topic at least every ``heartbeat_ms`` of
    wall-clock time, also while nothing trades, so that quiet partitions do not hold the
    streaming job's watermark back.
    """

    heartbeat_ms: Annotated[int, Field(ge=0)] = 200
    """Wall-clock interval between heartbeat rounds. 0 turns heartbeats off: the compatibility
    mode of producers without heartbeats (the reference's), whose quiet partitions then need
    ``streamfolio feed --source heartbeats`` to let bars close."""
    heartbeat_lag_ms: Annotated[int, Field(ge=0)] = 60_000
    """``--source cse`` and ``--source heartbeats``: their heartbeats promise nothing older than
    the wall clock minus this. The exchange reports trades with a delay; a trade published
    later than this after it happened may arrive behind a heartbeat, and the job then judges
    it late."""
    spool_dir: Path = Path(".cache/feed")
    """Where a feed stopped during a broker outage keeps the messages the broker had not
    acknowledged (one file per prices topic and ``kafka.client_id``), to publish them first
    when it starts again (docs/outage.md). Relative to the working directory."""


class MetricsSettings(StrictModel):
    """Prometheus endpoints (``/metrics``, docs/operations.md): one port per long-running
    component, 0 for none (the default, so parallel runs never fight over a port). A
    component's ``--metrics-port`` replaces its key here."""

    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    """The address the endpoints listen on: local by default; ``0.0.0.0`` for a Prometheus on
    another machine."""
    feed_port: Annotated[int, Field(ge=0, le=65535)] = 0
    rebalancer_port: Annotated[int, Field(ge=0, le=65535)] = 0
    store_port: Annotated[int, Field(ge=0, le=65535)] = 0
    dashboard_port: Annotated[int, Field(ge=0, le=65535)] = 0
    job_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """The streaming job's: Flink's own Prometheus reporter (its JobManager and TaskManagers
    on a local run share this one port; a cluster takes a range, see docs/operations.md)."""
