"""No poison pill stops the store (issue #11).

Two gates, each refusing a record on its own: the batch's other records are stored, the refused
one is dead-lettered with its reason, and the offsets are committed past it.

* The intake (:class:`~streamfolio.intake.Intake`, the rules every consumer applies): a record
  that does not decode, breaks its rules, is for a portfolio not configured, carries a key other
  than its portfolio id, is stamped in the future, or holds weights that do not fit its
  portfolio is dead-lettered with the intake's reason.
* The database: a message it cannot hold (a portfolio id longer than its column, a NUL
  character, a number out of range, anything a constraint refuses) is dead-lettered
  ``store_refused`` with the database's reason. Configured portfolio ids cannot be such, so the
  service tests of this gate use a store that archives everything (an intake with no portfolios)
  or a constraint of the database's own.

Connection errors are not refusals: they still hold the batch. SQLite here;
tests/integration/test_store.py does the same against PostgreSQL and Kafka.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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
from streamfolio.intake import Intake
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
YEAR_9999 = int(dt.datetime(9999, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
FITS = {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2}  # the example configuration's banks portfolio
LEVERAGED = {"ATW": 5.0, "BCP": -4.0, "BOA": 0.0}  # sums to 1, outside the long-only bounds
ARCHIVE = Intake(None, max_future_skew_ms=None)
"""The intake of a store that archives everything: any portfolio id, any time."""


def metrics(pid: str = "banks", i: int = 0, **kw: Any) -> PortfolioMetrics:
    return PortfolioMetrics(
        pid,
        risk=0.2,
        expected_return=0.1,
        sharpe_ratio=kw.pop("sharpe", 0.5),
        timestamp=T0 + i * MINUTE,
        count=kw.pop("count", 100 + i),
        weights=kw.pop("weights", FITS),
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


_PORTFOLIO_KEY: Any = object()


def _consumed(
    topic: str,
    offset: int,
    message: PortfolioMetrics | Weights,
    *,
    key: bytes | None = _PORTFOLIO_KEY,
) -> ConsumedRecord:
    """The record of ``message`` as read from partition 1: its Avro bytes, keyed by its
    portfolio id as the pipeline keys them unless ``key`` says otherwise."""
    record = message.to_record()
    value = codec_for(type(message).__name__).encode(record)
    if key is _PORTFOLIO_KEY:
        key = message.portfolio_id.encode()
    return ConsumedRecord(topic, 1, offset, key, T0, value, record)


def _service(
    settings: Settings,
    records: list[ConsumedRecord],
    engine: Engine,
    producer: FakeProducer,
    journal: list[str],
    *,
    intake: Intake | None = None,
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
        intake=intake,
    )
    consumer.drained = service.stop
    return service, consumer


def test_the_service_dead_letters_refused_records_commits_past_them_and_goes_on(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """What the database cannot hold is ``store_refused``: a store archiving everything (no
    configured portfolios) lets ids reach it that no configuration allows."""
    _absurd_sharpe_is_refused(engine)
    topic = settings.topics.metrics
    hostile = {
        1: metrics(NUL_ID, 1),
        2: metrics(LONG_ID, 2),
        5: metrics("banks", 5, weights={"AT\x00W": 1.0}),
        6: metrics("banks", 6, sharpe=1e308),
    }
    records = [_consumed(topic, 40 + i, hostile.get(i, metrics("banks", i))) for i in range(9)]
    journal: list[str] = []
    producer = FakeProducer(journal)
    service, consumer = _service(
        settings, records, engine, producer, journal, intake=ARCHIVE, batch_size=4
    )
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
    assert letters[2].detail == "metrics: weights contains a NUL character"
    assert letters[3].detail == "metrics: sharpe_ratio out of range"
    warnings = [r.getMessage() for r in caplog.records if "store_refused" in r.getMessage()]
    assert len(warnings) == 1 and f"{topic}[1]@41" in warnings[0]


def test_the_intake_refuses_what_the_pipeline_would_not_use_and_the_batch_goes_on(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's own intake (from the settings): each record the pipeline would refuse is
    dead-lettered with the intake's reason and not stored; the good ones of the same batch are,
    and what the database then refuses is still ``store_refused``."""
    _absurd_sharpe_is_refused(engine)
    metrics_topic, weights_topic = settings.topics.metrics, settings.topics.weights
    good_weights = Weights("banks", T0 + 3 * MINUTE, FITS, "rebalance", "rebalancer")
    records = [
        _consumed(metrics_topic, 0, metrics("banks", 0)),
        _consumed(metrics_topic, 1, metrics("nope", 1)),  # not configured
        _consumed(metrics_topic, 2, metrics(NUL_ID, 2)),  # not configured either
        _consumed(metrics_topic, 3, metrics(LONG_ID, 3)),  # nor this
        _consumed(metrics_topic, 4, metrics("banks", 4), key=b"portf1"),  # another's key
        _consumed(metrics_topic, 5, metrics("banks", 5), key=None),  # no key
        _consumed(metrics_topic, 6, dataclasses.replace(metrics("banks", 6), timestamp=YEAR_9999)),
        _consumed(metrics_topic, 7, metrics("banks", 7, weights=LEVERAGED)),
        _consumed(metrics_topic, 8, metrics("banks", 8, sharpe=1e308)),  # the database refuses
        _consumed(metrics_topic, 9, metrics("banks", 9)),
        _consumed(weights_topic, 10, dataclasses.replace(good_weights, weights=LEVERAGED)),
        _consumed(weights_topic, 11, good_weights),
    ]
    journal: list[str] = []
    producer = FakeProducer(journal)
    service, consumer = _service(settings, records, engine, producer, journal)
    with caplog.at_level("WARNING"):
        stats = service.run()

    assert journal == ["write 3", "dead letters 9", "commit"] and consumer.closed
    assert _stored_ids(engine) == [("banks", 0), ("banks", 9)]
    assert _stored_ids(engine, schema.weights) == [("banks", 3)]
    with engine.connect() as connection:
        stored = connection.execute(sa.select(schema.weights.c.weights)).scalar_one()
    assert stored == FITS
    assert dict(stats.skipped) == {
        "unknown_portfolio": 3,
        "key_mismatch": 2,
        "future": 1,
        "invalid_metrics": 1,
        "invalid_weights": 1,
        "store_refused": 1,
    }
    assert stats.consumed == 12 and stats.dead_lettered == 9

    letters = {d.offset: d for d in producer.letters()}
    assert {o: d.reason for o, d in letters.items()} == {
        1: "unknown_portfolio",
        2: "unknown_portfolio",
        3: "unknown_portfolio",
        4: "key_mismatch",
        5: "key_mismatch",
        6: "future",
        7: "invalid_metrics",
        8: "store_refused",
        10: "invalid_weights",
    }
    by_offset = {r.offset: r for r in records}
    for offset, letter in letters.items():
        source = by_offset[offset]
        assert letter.component == "store" and letter.source_topic == source.topic
        assert letter.payload == source.value and letter.key == source.key
        assert letter.partition == 1 and "\n" not in letter.detail
    assert letters[1].detail == "portfolio 'nope' is not configured"
    assert letters[4].detail == "key 'portf1' is not the portfolio id 'banks'"
    assert letters[5].detail == "key None is not the portfolio id 'banks'"
    assert "max_future_skew_ms" in letters[6].detail
    assert letters[7].detail == "banks metrics: weight of ATW is 5, outside its bounds [0, 1]"
    assert letters[10].detail == "banks weights: weight of ATW is 5, outside its bounds [0, 1]"
    warnings = [r.getMessage() for r in caplog.records if "skipped a message" in r.getMessage()]
    assert len(warnings) == 6, "one log line per reason"


def test_undecodable_and_invalid_messages_are_dead_lettered_with_their_reason(
    settings: Settings, engine: Engine
) -> None:
    topic = settings.topics.weights
    codec = codec_for("Weights")
    good = Weights("banks", T0, FITS, "initial", "config").to_record()
    nan = codec.encode(good | {"weights": FITS | {"ATW": float("nan")}})
    records = [
        ConsumedRecord(topic, 0, 7, b"banks", T0, b"\x0agarbage", None, "undecodable: EOF"),
        ConsumedRecord(topic, 0, 8, b"banks", T0, nan, None),
        ConsumedRecord(topic, 0, 9, b"banks", T0, codec.encode(good), good),
    ]
    journal: list[str] = []
    producer = FakeProducer(journal)
    service, _ = _service(settings, records, engine, producer, journal)
    stats = service.run()
    assert journal == ["write 1", "dead letters 2", "commit"]
    assert dict(stats.skipped) == {"undecodable": 1, "invalid_weights": 1}
    letters = producer.letters()
    assert [(d.reason, d.offset, d.payload) for d in letters] == [
        ("undecodable", 7, b"\x0agarbage"),
        ("invalid_weights", 8, nan),
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
