"""No poison pill stops the store (issue #11).

A message the database cannot hold (a portfolio id longer than its column, a NUL character, a
number out of range, anything a constraint refuses) is refused on its own: the batch's other
records are stored, the refused one is dead-lettered ``store_refused`` with the database's reason,
and the offsets are committed past it. Connection errors are not refusals: they still hold the
batch. SQLite here; tests/integration/test_store.py does the same against PostgreSQL and Kafka.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)

from streamfolio.config import Settings, example_config_path, load_config
from streamfolio.kafka.clients import ConsumedRecord
from streamfolio.messages import DeadLetter, PortfolioMetrics, Weights
from streamfolio.serde import codec_for
from streamfolio.store import schema
from streamfolio.store.schema import StoreError, open_store
from streamfolio.store.service import StoreOptions, StoreService
from streamfolio.store.writer import (
    Batch,
    Provenance,
    StoreWriter,
    is_data_error,
    reason_of,
    refusal_of,
)

T0 = 1_790_845_200_000  # 2026-10-01T09:00:00Z
MINUTE = 60_000
LONG_ID = "p" * 65
NUL_ID = "ban\x00ks"


def metrics(pid: str = "banks", i: int = 0, **kw: Any) -> PortfolioMetrics:
    return PortfolioMetrics(
        pid,
        risk=0.2,
        expected_return=0.1,
        sharpe_ratio=kw.pop("sharpe", 0.5),
        timestamp=T0 + i * MINUTE,
        count=kw.pop("count", 100 + i),
        weights=kw.pop("weights", {"ATW": 0.5, "BCP": 0.5}),
        sharpe_threshold=0.4,
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_store(f"sqlite:///{tmp_path}/history.db")
    yield engine
    engine.dispose()


def _stored_ids(engine: Engine, table: sa.Table = schema.metrics) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(table.c.portfolio_id, table.c.timestamp_ms).order_by(table.c.timestamp_ms)
        )
        return [(pid, (t - T0) // MINUTE) for pid, t in rows]


def _absurd_sharpe_is_refused(engine: Engine) -> None:
    """A constraint of the database's own (a trigger): the kind of refusal no check foresees."""
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER absurd_sharpe BEFORE INSERT ON metrics WHEN NEW.sharpe_ratio > 1e300 "
            "BEGIN SELECT RAISE(ABORT, 'sharpe_ratio out of range'); END"
        )


# ------------------------------------------------------------------------------ the writer


def test_texts_the_columns_cannot_hold_are_refused_before_the_database() -> None:
    weights = schema.weights
    assert refusal_of(weights, {"portfolio_id": "p" * 64, "weights": {"ATW": 1.0}}) is None
    assert refusal_of(weights, {"portfolio_id": LONG_ID}) == (
        "portfolio_id is 65 characters, longer than the 64 the store keeps"
    )
    assert refusal_of(weights, {"portfolio_id": NUL_ID}) == "portfolio_id contains a NUL character"
    assert refusal_of(weights, {"portfolio_id": "p", "reason": "a\x00b"}) == (
        "reason contains a NUL character"
    )
    assert refusal_of(weights, {"portfolio_id": "p", "weights": {"AT\x00W": 1.0}}) == (
        "weights contains a NUL character"
    )
    too_long = "T" * (schema.TICKER_LENGTH + 1)
    assert refusal_of(schema.statistics, {"portfolio_id": "p", "tickers": ["ATW", too_long]}) == (
        f"tickers has a ticker of {len(too_long)} characters, longer than the "
        f"{schema.TICKER_LENGTH} the store keeps"
    )


def test_a_hostile_record_is_refused_and_the_rest_of_its_batch_is_stored(engine: Engine) -> None:
    _absurd_sharpe_is_refused(engine)
    batch = Batch()
    hostile = {
        2: metrics(LONG_ID, 2),
        4: metrics(NUL_ID, 4),
        6: metrics("banks", 6, weights={"AT\x00W": 1.0}),
        8: metrics("banks", 8, count=2**64),  # beyond SQLite's 64-bit integers
        10: metrics("banks", 10, sharpe=1e308),  # the trigger refuses it
    }
    for i in range(12):
        batch.add(hostile.get(i, metrics("banks", i)), Provenance("metrics-topic", 3, 100 + i))

    result = StoreWriter(engine).write_batch(batch)

    assert result.written == {"metrics": 7}
    assert _stored_ids(engine) == [("banks", i) for i in range(12) if i not in hostile]
    refused = {r.provenance.offset: r for r in result.refused}
    assert sorted(refused) == [100 + i for i in hostile]
    assert all(r.table == "metrics" and r.provenance.partition == 3 for r in result.refused)
    assert "longer than the 64" in refused[102].reason
    assert refused[104].reason == "portfolio_id contains a NUL character"
    assert refused[106].reason == "weights contains a NUL character"
    assert "too large" in refused[108].reason
    assert refused[110].reason == "sharpe_ratio out of range"
    for r in result.refused:
        assert "\n" not in r.reason and len(r.reason) <= 200
        assert "INSERT INTO" not in r.reason and "sqlite:" not in r.reason


def test_a_refused_record_does_not_displace_a_good_one_with_its_key(engine: Engine) -> None:
    batch = Batch()
    batch.add(metrics("banks", 0), Provenance("t", 0, 1))
    batch.add(metrics("banks", 0, weights={"AT\x00W": 1.0}), Provenance("t", 0, 2))
    result = StoreWriter(engine).write_batch(batch)
    assert result.written == {"metrics": 1} and [r.provenance.offset for r in result.refused] == [2]
    with engine.connect() as connection:
        assert connection.execute(sa.select(schema.metrics.c.kafka_offset)).scalar_one() == 1


def test_the_all_or_nothing_write_refuses_hostile_records_before_writing_anything(
    engine: Engine,
) -> None:
    writer = StoreWriter(engine)
    with pytest.raises(StoreError, match=r"1 message.* refused, nothing written.*NUL"):
        writer.write([metrics("banks", 0), metrics(NUL_ID, 1)])
    assert writer.row_counts()["metrics"] == 0


def test_connection_errors_are_not_refusals_they_propagate(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = StoreWriter(engine)
    real = writer._execute
    calls: list[int] = []

    def flaky(connection: Any, rows: Any) -> None:
        calls.append(sum(len(r) for r in rows.values()))
        if len(calls) == 1:  # the batch: a data error, so record by record
            raise DataError("INSERT", {}, Exception("value too long"))
        if len(calls) == 3:  # the second record: the database goes away
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        real(connection, rows)

    monkeypatch.setattr(writer, "_execute", flaky)
    with pytest.raises(OperationalError):
        writer.write_batch(Batch([metrics("banks", i) for i in range(3)]))
    assert calls == [3, 1, 1], "no record is refused for the connection's sake"

    monkeypatch.setattr(
        writer, "_execute", lambda *_: (_ for _ in ()).throw(OperationalError("x", {}, Exception()))
    )
    with pytest.raises(OperationalError):
        writer.write_batch(Batch([metrics()]))


def test_what_counts_as_a_data_error() -> None:
    orig = Exception("boom")
    assert is_data_error(DataError("INSERT", {}, orig))
    assert is_data_error(IntegrityError("INSERT", {}, orig))
    assert is_data_error(StatementError("bad value", "INSERT", {}, TypeError("not JSON")))
    assert is_data_error(OverflowError("Python int too large to convert to SQLite INTEGER"))
    assert not is_data_error(OperationalError("INSERT", {}, orig))
    assert not is_data_error(InterfaceError("INSERT", {}, orig))
    assert not is_data_error(DataError("INSERT", {}, orig, connection_invalidated=True))
    assert not is_data_error(ValueError("a bug"))


def test_reasons_are_one_short_line_without_sql_or_urls() -> None:
    orig = Exception(
        "value too long for type character varying(64)\n"
        "CONTEXT: postgresql://admin:secret@db.internal/history\n"
    )
    error = DataError("INSERT INTO metrics (portfolio_id) VALUES (%(p)s)", {"p": LONG_ID}, orig)
    assert reason_of(error) == "value too long for type character varying(64)"
    url = reason_of(Exception("cannot reach postgresql://admin:secret@db/h now"))
    assert "secret" not in url and url == "cannot reach <url> now"
    assert len(reason_of(Exception("x" * 10_000))) == 200


# ------------------------------------------------------------------------------ the service


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_config(example_config_path(), environ={})


class FakeConsumer:
    """Hands out prepared records, then nothing; logs commits. Sets ``drained`` once empty."""

    def __init__(self, records: list[ConsumedRecord], journal: list[str]) -> None:
        self.records = list(records)
        self.journal = journal
        self.drained: threading.Event | None = None
        self.closed = False

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
    """Keeps the dead letters; ``stuck`` letters are never delivered, ``fail`` ones fail."""

    def __init__(self, journal: list[str], *, stuck: bool = False, fail: bool = False) -> None:
        self.journal = journal
        self.stuck = stuck
        self.fail = fail
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.failed = 0
        self._unflushed = 0

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))
        self._unflushed += 1

    def flush(self, timeout: float = 30.0) -> int:
        if self.stuck:
            threading.Event().wait(0.02)
            return self._unflushed
        if self._unflushed:
            self.journal.append(f"dead letters {self._unflushed}")
            if self.fail:
                self.failed += self._unflushed
            self._unflushed = 0
        return 0

    def letters(self) -> list[DeadLetter]:
        codec = codec_for("DeadLetter")
        return [DeadLetter.from_record(codec.decode(value)) for _, _, value in self.sent]


class JournalWriter(StoreWriter):
    def __init__(self, engine: Engine, journal: list[str]) -> None:
        super().__init__(engine)
        self.journal = journal

    def write_batch(self, batch: Batch) -> Any:
        result = super().write_batch(batch)
        self.journal.append(f"write {sum(result.written.values())}")
        return result


def _consumed(topic: str, offset: int, message: PortfolioMetrics) -> ConsumedRecord:
    record = message.to_record()
    try:
        value = codec_for("PortfolioMetrics").encode(record)
    except Exception:  # a count beyond Avro's long: the bytes do not matter here
        value = b"\x00unencodable"
    return ConsumedRecord(topic, 1, offset, message.portfolio_id.encode(), T0, value, record)


def _service(
    settings: Settings,
    records: list[ConsumedRecord],
    engine: Engine,
    producer: FakeProducer,
    journal: list[str],
    **options: Any,
) -> tuple[StoreService, FakeConsumer]:
    consumer = FakeConsumer(records, journal)
    defaults: dict[str, Any] = {"duration_s": 5.0, "batch_seconds": 0.05}
    service = StoreService(
        settings,
        StoreOptions(**(defaults | options)),
        writer=JournalWriter(engine, journal),
        consumer=consumer,
        producer=producer,
    )
    consumer.drained = service.stop
    return service, consumer


def test_the_service_dead_letters_refused_records_commits_past_them_and_goes_on(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    _absurd_sharpe_is_refused(engine)
    topic = settings.topics.metrics
    hostile = {
        1: metrics(NUL_ID, 1),
        2: metrics(LONG_ID, 2),
        5: metrics("banks", 5, count=2**64),
        6: metrics("banks", 6, sharpe=1e308),
    }
    records = [_consumed(topic, 40 + i, hostile.get(i, metrics("banks", i))) for i in range(9)]
    journal: list[str] = []
    producer = FakeProducer(journal)
    service, consumer = _service(settings, records, engine, producer, journal, batch_size=4)
    with caplog.at_level("WARNING"):
        stats = service.run()

    # Three batches, each stored as far as the database takes it, each committed after its
    # dead letters are delivered: the store went on past every hostile record.
    assert journal == [
        "write 2",
        "dead letters 2",
        "commit",
        "write 2",
        "dead letters 2",
        "commit",
        "write 1",
        "commit",
    ]
    assert consumer.closed and stats.consumed == 9
    assert _stored_ids(engine) == [("banks", i) for i in (0, 3, 4, 7, 8)]
    assert dict(stats.skipped) == {"store_refused": 4} and stats.dead_lettered == 4
    assert "skipped 4 store_refused; dead-lettered 4" in stats.line()

    letters = producer.letters()
    assert {t for t, _, _ in producer.sent} == {settings.topics.dead_letter}
    assert [d.offset for d in letters] == [41, 42, 45, 46]
    by_offset = {r.offset: r for r in records}
    for letter in letters:
        assert letter.reason == "store_refused" and letter.component == "store"
        assert letter.source_topic == topic and letter.partition == 1
        source = by_offset[letter.offset or 0]
        assert letter.payload == source.value and letter.key == source.key
        assert letter.detail.startswith("metrics: ") and "\n" not in letter.detail
    assert "NUL" in letters[0].detail and "longer than the 64" in letters[1].detail
    assert letters[3].detail == "metrics: sharpe_ratio out of range"
    warnings = [r.getMessage() for r in caplog.records if "store_refused" in r.getMessage()]
    assert len(warnings) == 1 and f"{topic}[1]@41" in warnings[0]


def test_undecodable_and_invalid_messages_are_dead_lettered_with_their_reason(
    settings: Settings, engine: Engine
) -> None:
    topic = settings.topics.weights
    good = Weights("banks", T0, {"ATW": 1.0}, "initial", "config").to_record()
    records = [
        ConsumedRecord(topic, 0, 7, b"banks", T0, b"\x0agarbage", None, "undecodable: EOF"),
        ConsumedRecord(
            topic, 0, 8, b"banks", T0, b"nan", good | {"weights": {"ATW": float("nan")}}
        ),
        ConsumedRecord(topic, 0, 9, b"banks", T0, b"ok", good),
    ]
    journal: list[str] = []
    producer = FakeProducer(journal)
    service, _ = _service(settings, records, engine, producer, journal)
    stats = service.run()
    assert journal == ["write 1", "dead letters 2", "commit"]
    assert dict(stats.skipped) == {"undecodable": 1, "invalid": 1}
    letters = producer.letters()
    assert [(d.reason, d.offset, d.payload) for d in letters] == [
        ("undecodable", 7, b"\x0agarbage"),
        ("invalid", 8, b"nan"),
    ]
    assert all(d.component == "store" and d.source_topic == topic for d in letters)


def test_offsets_wait_for_the_dead_letters_and_stay_uncommitted_if_they_never_arrive(
    settings: Settings, engine: Engine
) -> None:
    journal: list[str] = []
    records = [_consumed(settings.topics.metrics, 0, metrics(NUL_ID, 0))]
    producer = FakeProducer(journal, stuck=True)
    service, consumer = _service(settings, records, engine, producer, journal, duration_s=None)
    consumer.drained = None
    threading.Timer(0.3, service.stop.set).start()
    with pytest.raises(StoreError, match=r"1 dead letter.* not delivered.* read again"):
        service.run()
    assert "commit" not in journal and consumer.closed


def test_a_failed_dead_letter_delivery_leaves_the_offsets_uncommitted(
    settings: Settings, engine: Engine
) -> None:
    journal: list[str] = []
    records = [_consumed(settings.topics.metrics, 0, metrics(LONG_ID, 0))]
    producer = FakeProducer(journal, fail=True)
    service, consumer = _service(settings, records, engine, producer, journal)
    with pytest.raises(StoreError, match=r"could not be delivered.* read again"):
        service.run()
    assert "commit" not in journal and consumer.closed
