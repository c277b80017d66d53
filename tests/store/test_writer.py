"""The history database's writes: idempotent upserts, one transaction per batch, and the store
service's consume → write → commit order (with a fake consumer: no broker needed here).

The records fit the example configuration's ``banks`` portfolio (ATW, BCP, BOA): the service
reads through :class:`~streamfolio.intake.Intake`, which refuses anything else."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from streamfolio.config import Settings, example_config_path, load_config
from streamfolio.errors import UsageError
from streamfolio.kafka.clients import ConsumedRecord
from streamfolio.messages import PortfolioMetrics, PortfolioStats, RebalanceEvent, Weights
from streamfolio.serde import codec_for
from streamfolio.store import schema
from streamfolio.store.schema import SCHEMA_VERSION, StoreError, open_store, safe_url
from streamfolio.store.service import StoreOptions, StoreService
from streamfolio.store.writer import Batch, Provenance, StoreWriter, WriteResult, _upsert

T0 = 1_790_845_200_000  # 2026-10-01T09:00:00Z
MINUTE = 60_000


def metrics(pid: str = "banks", i: int = 0, sharpe: float = 0.5, **kw: Any) -> PortfolioMetrics:
    return PortfolioMetrics(
        pid,
        risk=kw.pop("risk", 0.2),
        expected_return=kw.pop("expected_return", 0.1),
        sharpe_ratio=sharpe,
        timestamp=T0 + i * MINUTE,
        count=100 + i,
        weights=kw.pop("weights", {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2}),
        sharpe_threshold=kw.pop("sharpe_threshold", 0.4),
        **kw,
    )


def stats(pid: str = "banks", i: int = 0) -> PortfolioStats:
    return PortfolioStats.from_arrays(
        pid,
        T0 + i * MINUTE,
        ["ATW", "BCP", "BOA"],
        [1e-4, 2e-4 + i * 1e-6, 3e-4],
        [[4e-4, 1e-4, 0.0], [1e-4, 9e-4, 0.0], [0.0, 0.0, 1e-3]],
        count=50 + i,
        kind="updated",
        bar_seconds=60,
    )


def weights(pid: str = "banks", i: int = 0, atw: float = 0.5) -> Weights:
    split = {"ATW": atw, "BCP": round(0.8 - atw, 12), "BOA": 0.2}
    return Weights(pid, T0 + i * MINUTE, split, "rebalance", "rebalancer")


def event(pid: str = "banks", i: int = 0, decision: str = "rebalance") -> RebalanceEvent:
    return RebalanceEvent(
        pid,
        T0 + i * MINUTE,
        "Sharpe 0.30 below threshold 0.40",
        decision,
        {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2},
        {"ATW": 0.7, "BCP": 0.2, "BOA": 0.1},
        0.3,
        0.6,
        0.12,
        0.2,
        0.4,
        "optimal",
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_store(f"sqlite:///{tmp_path}/history.db")
    yield engine
    engine.dispose()


def _rows(engine: Engine, table: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(sa.select(table)).mappings()]


# ------------------------------------------------------------------------------ opening a store


def test_open_store_creates_the_sqlite_file_and_its_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "history.db"
    engine = open_store(f"sqlite:///{path}")
    try:
        assert path.is_file()
        assert set(sa.inspect(engine).get_table_names()) >= set(schema.table_names())
        with engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()
        assert mode == "wal", "readers (reports) must not block the writer"
    finally:
        engine.dispose()


def test_reopening_a_store_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/history.db"
    first = open_store(url)
    StoreWriter(first).write([metrics()])
    first.dispose()
    again = open_store(url)
    assert StoreWriter(again).row_counts()["metrics"] == 1
    again.dispose()


def test_a_reader_refuses_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no history database at .*nope\.db"):
        open_store(f"sqlite:///{tmp_path}/nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()


def test_a_database_without_streamfolio_tables_is_refused_by_readers(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    other = sa.create_engine(f"sqlite:///{path}")
    with other.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    other.dispose()
    with pytest.raises(StoreError, match="no streamfolio history tables"):
        open_store(f"sqlite:///{path}", create=False)


def test_a_database_of_a_newer_layout_is_refused(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            schema.store_meta.update()
            .where(schema.store_meta.c.key == "schema_version")
            .values(value=str(SCHEMA_VERSION + 1))
        )
    with pytest.raises(StoreError, match="newer than this streamfolio"):
        open_store(engine.url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://me@db/history", "mysql is not supported"),
        ("history.db", "is not a database URL"),
    ],
)
def test_unsupported_databases_are_refused_with_the_fix(url: str, problem: str) -> None:
    with pytest.raises(StoreError, match=problem) as info:
        open_store(url)
    assert "sqlite:///" in str(info.value) and "postgresql://" in str(info.value)


def test_passwords_never_reach_messages() -> None:
    assert safe_url("postgresql://me:hunter2@db:5432/h") == "postgresql://me:***@db:5432/h"
    with pytest.raises(StoreError) as info:
        open_store("postgresql+nosuchdriver://me:hunter2@db/h")
    assert "hunter2" not in str(info.value)


# ----------------------------------------------------------------------------- writing messages


def test_every_kind_of_message_is_stored_as_one_row(engine: Engine) -> None:
    written = StoreWriter(engine).write([metrics(), stats(), weights(), event()])
    assert written == {"metrics": 1, "statistics": 1, "weights": 1, "rebalance_events": 1}

    (m,) = _rows(engine, schema.metrics)
    assert (m["portfolio_id"], m["timestamp_ms"], m["sharpe_ratio"]) == ("banks", T0, 0.5)
    assert m["observations"] == 100 and m["sharpe_threshold"] == 0.4
    assert m["weights"] == {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2}
    # SQLite keeps no offset: the timestamp reads back naive, in UTC.
    assert m["event_time"].replace(tzinfo=dt.UTC) == dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC)

    (s,) = _rows(engine, schema.statistics)
    assert s["kind"] == "updated" and s["tickers"] == ["ATW", "BCP", "BOA"]
    assert s["mean"] == {"ATW": 1e-4, "BCP": 2e-4, "BOA": 3e-4}
    assert s["covariance"]["BCP"] == {"ATW": 1e-4, "BCP": 9e-4, "BOA": 0.0}
    assert (s["observations"], s["bar_seconds"], s["estimator"]) == (50, 60, "welford")

    (w,) = _rows(engine, schema.weights)
    assert (w["reason"], w["source"], w["weights"]) == (
        "rebalance",
        "rebalancer",
        {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2},
    )

    (e,) = _rows(engine, schema.rebalance_events)
    assert e["event_id"] == f"banks@{T0}" and e["decision"] == "rebalance"
    assert (e["sharpe_before"], e["sharpe_after"], e["turnover"]) == (0.3, 0.6, 0.4)
    assert e["new_weights"] == {"ATW": 0.7, "BCP": 0.2, "BOA": 0.1}


def test_rows_record_where_they_were_read(engine: Engine) -> None:
    batch = Batch()
    batch.add(metrics(), Provenance("portfMetrics", 2, 41), stored_at_ms=123)
    StoreWriter(engine).write(batch)
    (m,) = _rows(engine, schema.metrics)
    assert (m["kafka_topic"], m["kafka_partition"], m["kafka_offset"]) == ("portfMetrics", 2, 41)
    assert m["stored_at_ms"] == 123


def test_replaying_the_same_messages_adds_no_rows(engine: Engine) -> None:
    history = [metrics(i=i) for i in range(20)] + [stats(i=i) for i in range(20)]
    history += [weights(i=0), weights(i=10, atw=0.7), event(i=10), event(i=15, decision="hold")]
    writer = StoreWriter(engine)
    writer.write(history)
    first = writer.row_counts()
    assert first == {
        "metrics": 20,
        "statistics": 20,
        "weights": 2,
        "rebalance_events": 2,
        "portfolio_definitions": 0,
    }
    for _ in range(2):
        writer.write(history)
    assert writer.row_counts() == first
    # One message at a time, as a slow consumer would, changes nothing either.
    for message in history:
        writer.write([message])
    assert writer.row_counts() == first


def test_a_second_message_for_the_same_key_replaces_the_first(engine: Engine) -> None:
    writer = StoreWriter(engine)
    batch = Batch()
    batch.add(metrics(sharpe=0.1), Provenance("m", 0, 1))
    batch.add(metrics(sharpe=0.2), Provenance("m", 0, 2))
    assert len(batch) == 2
    assert [r["sharpe_ratio"] for r in batch.rows()["metrics"]] == [0.2]
    assert writer.write(batch) == {"metrics": 1}
    writer.write([metrics(sharpe=0.3, risk=0.25)])
    (m,) = _rows(engine, schema.metrics)
    assert (m["sharpe_ratio"], m["risk"]) == (0.3, 0.25), "the last message read wins"


def test_statistics_of_each_kind_are_kept_apart(engine: Engine) -> None:
    initial = PortfolioStats.from_arrays("banks", T0, ["ATW"], [0.0], [[1e-4]], kind="initial")
    updated = PortfolioStats.from_arrays("banks", T0, ["ATW"], [0.0], [[1e-4]], kind="updated")
    StoreWriter(engine).write([initial, updated])
    assert sorted(r["kind"] for r in _rows(engine, schema.statistics)) == ["initial", "updated"]


def test_a_failed_transaction_stores_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = StoreWriter(engine)
    real = writer._execute

    def half_then_fail(connection: Any, rows: Any) -> None:
        real(connection, {"metrics": rows["metrics"]})
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(writer, "_execute", half_then_fail)
    with pytest.raises(OperationalError):
        writer.write([metrics(), weights()])
    assert StoreWriter(engine).row_counts()["metrics"] == 0, "the batch is all or nothing"


def test_upserts_compile_for_postgresql() -> None:
    # The same statements run on PostgreSQL (tests/integration/test_store.py runs them there when
    # PostgreSQL is installed); this checks their SQL without a server.
    sql = str(_upsert("postgresql", schema.metrics).compile(dialect=postgresql.dialect()))
    assert "ON CONFLICT (portfolio_id, timestamp_ms) DO UPDATE SET" in sql
    assert "sharpe_ratio = excluded.sharpe_ratio" in sql
    sql = str(_upsert("postgresql", schema.rebalance_events).compile(dialect=postgresql.dialect()))
    assert "ON CONFLICT (event_id) DO UPDATE" in sql
    with pytest.raises(StoreError, match="no upsert for database dialect 'mssql'"):
        _upsert("mssql", schema.metrics)


# ------------------------------------------------------------------ the service, without Kafka


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_config(example_config_path(), environ={})


class FakeConsumer:
    """Hands out prepared records, then nothing; logs commits in a shared journal. Once drained
    it sets ``drained`` (the service's stop event, when a test wants it to stop there)."""

    def __init__(self, records: list[ConsumedRecord], journal: list[str]) -> None:
        self.records = list(records)
        self.journal = journal
        self.closed = False
        self.drained: threading.Event | None = None

    def poll(self, timeout: float = 1.0) -> ConsumedRecord | None:
        if self.records:
            return self.records.pop(0)
        if self.drained is not None:
            self.drained.set()
        threading.Event().wait(min(timeout, 0.01))
        return None

    def commit(self) -> None:
        self.journal.append("commit")

    def lag(self) -> int | None:
        return len(self.records)

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Keeps what the service dead-letters; logs each flush that had letters to deliver."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.failed = 0
        self._unflushed = 0

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))
        self._unflushed += 1

    def flush(self, timeout: float = 30.0) -> int:
        if self._unflushed:
            self.journal.append(f"dead letters {self._unflushed}")
            self._unflushed = 0
        return 0


class JournalWriter(StoreWriter):
    """A real writer that logs each successful transaction, and can fail the first ones."""

    def __init__(self, engine: Engine, journal: list[str], failures: int = 0) -> None:
        super().__init__(engine)
        self.journal = journal
        self.failures = failures

    def write_batch(self, batch: Batch) -> WriteResult:
        if self.failures:
            self.failures -= 1
            self.journal.append("failed")
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        result = super().write_batch(batch)
        self.journal.append(f"write {sum(result.written.values())}")
        return result


Message = PortfolioMetrics | PortfolioStats | Weights | RebalanceEvent


def _consumed(topic: str, offset: int, message: Message | bytes) -> ConsumedRecord:
    """A record as the consumer hands it over: the message's Avro bytes (or raw bytes, for an
    undecodable one), keyed by the portfolio id as the pipeline keys them."""
    if isinstance(message, bytes):
        return ConsumedRecord(topic, 0, offset, b"banks", T0, message, None, "undecodable")
    record = message.to_record()
    value = codec_for(type(message).__name__).encode(record)
    return ConsumedRecord(topic, 0, offset, message.portfolio_id.encode(), T0, value, record)


def _service(
    settings: Settings,
    consumer: FakeConsumer,
    writer: StoreWriter,
    *,
    until_drained: bool = True,
    producer: FakeProducer | None = None,
    **options: Any,
) -> StoreService:
    defaults: dict[str, Any] = {"duration_s": 5.0, "batch_seconds": 0.05}
    service = StoreService(
        settings,
        StoreOptions(**(defaults | options)),
        writer=writer,
        consumer=consumer,
        producer=producer,
    )
    if until_drained:
        consumer.drained = service.stop
    return service


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamfolio.store.service._RETRY_FIRST_S", 0.01)


def test_offsets_are_committed_only_after_the_rows_are_stored(
    settings: Settings, engine: Engine
) -> None:
    topics = settings.topics
    records = [_consumed(topics.metrics, i, metrics(i=i)) for i in range(7)]
    records += [
        _consumed(topics.weights, 7, weights()),
        _consumed(topics.updated_stats, 8, stats()),
        _consumed(topics.rebalance_events, 9, event()),
    ]
    journal: list[str] = []
    consumer = FakeConsumer(records, journal)
    stats_ = _service(settings, consumer, JournalWriter(engine, journal), batch_size=4).run()
    assert journal == ["write 4", "commit", "write 4", "commit", "write 2", "commit"]
    assert stats_.consumed == 10 and stats_.transactions == 3
    assert dict(stats_.written) == {
        "metrics": 7,
        "weights": 1,
        "statistics": 1,
        "rebalance_events": 1,
    }
    assert consumer.closed
    assert "metrics 7" in stats_.line() and "rebalance_events 1" in stats_.line()


def test_bad_messages_are_skipped_counted_dead_lettered_and_still_committed(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    topic = settings.topics.metrics
    nan_risk = codec_for("PortfolioMetrics").encode(metrics().to_record() | {"risk": float("nan")})
    records = [
        _consumed(topic, 0, b"\x0agarbage"),
        _consumed(topic, 1, b""),
        dataclasses.replace(_consumed(topic, 2, metrics()), value=nan_risk),
        _consumed(topic, 3, metrics(i=3)),
    ]
    journal: list[str] = []
    consumer = FakeConsumer(records, journal)
    producer = FakeProducer(journal)
    with caplog.at_level("WARNING"):
        result = _service(
            settings, consumer, JournalWriter(engine, journal), producer=producer
        ).run()
    assert dict(result.skipped) == {"undecodable": 2, "invalid_metrics": 1}
    assert journal == ["write 1", "dead letters 3", "commit"], (
        "skipped messages are dead-lettered, then acknowledged with the batch"
    )
    assert [topic for topic, _, _ in producer.sent] == [settings.topics.dead_letter] * 3
    warnings = [r.getMessage() for r in caplog.records if "skipped a message" in r.getMessage()]
    assert len(warnings) == 2, "one log line per reason"
    assert any(f"{topic}[0]@2" in w and "not finite" in w for w in warnings)
    assert "skipped 1 invalid_metrics, 2 undecodable; dead-lettered 3" in result.line()


def test_a_batch_of_only_bad_messages_is_committed_without_a_transaction(
    settings: Settings, engine: Engine
) -> None:
    journal: list[str] = []
    consumer = FakeConsumer([_consumed(settings.topics.weights, 0, b"bad")], journal)
    producer = FakeProducer(journal)
    result = _service(settings, consumer, JournalWriter(engine, journal), producer=producer).run()
    assert journal == ["dead letters 1", "commit"] and result.transactions == 0


def test_a_database_outage_holds_the_commit_until_the_write_succeeds(
    settings: Settings, engine: Engine
) -> None:
    journal: list[str] = []
    records = [_consumed(settings.topics.metrics, i, metrics(i=i)) for i in range(3)]
    consumer = FakeConsumer(records, journal)
    writer = JournalWriter(engine, journal, failures=2)
    # Running on after the records are drained: the retries happen inside the loop.
    _service(settings, consumer, writer, until_drained=False, duration_s=0.5).run()
    assert journal == ["failed", "failed", "write 3", "commit"]


def test_at_stop_an_unreachable_database_leaves_the_offsets_uncommitted(
    settings: Settings, engine: Engine
) -> None:
    journal: list[str] = []
    consumer = FakeConsumer([_consumed(settings.topics.metrics, 0, metrics())], journal)
    writer = JournalWriter(engine, journal, failures=10**6)
    service = _service(settings, consumer, writer, until_drained=False, duration_s=None)
    threading.Timer(0.3, service.stop.set).start()
    with pytest.raises(StoreError, match=r"1 message.* read again at the next start"):
        service.run()
    assert "commit" not in journal and consumer.closed


def test_the_service_stops_on_its_event(settings: Settings, engine: Engine) -> None:
    journal: list[str] = []
    consumer = FakeConsumer([], journal)
    service = _service(
        settings, consumer, JournalWriter(engine, journal), until_drained=False, duration_s=None
    )
    threading.Timer(0.2, service.stop.set).start()
    result = service.run()
    assert result.consumed == 0 and journal == [] and consumer.closed


def test_status_lines_report_rows_and_lag(settings: Settings, engine: Engine) -> None:
    journal: list[str] = []
    lines: list[str] = []
    records = [_consumed(settings.topics.metrics, i, metrics(i=i)) for i in range(3)]
    service = StoreService(
        settings,
        StoreOptions(duration_s=0.5, batch_seconds=0.05, status_interval_s=0.1),
        writer=JournalWriter(engine, journal),
        consumer=FakeConsumer(records, journal),
        progress=lines.append,
    )
    service.run()
    assert lines[0].startswith("store: ") and "-> sqlite:///" in lines[0]
    status = [line for line in lines[1:] if "rows written" in line]
    assert status and "metrics 3" in status[-1] and "lag 0" in status[-1]


def test_options_are_checked() -> None:
    with pytest.raises(UsageError, match="batch size"):
        StoreOptions(batch_size=0)
    with pytest.raises(UsageError, match="batch seconds"):
        StoreOptions(batch_seconds=0)
