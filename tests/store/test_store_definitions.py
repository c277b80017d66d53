"""The store follows the portfolios topic (no broker): the definitions it reads are kept in
``portfolio_definitions`` (a removal as null), and a portfolio defined at run time has its
records stored from the first."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamfolio.config import Settings, example_config_path, load_config
from streamfolio.kafka.clients import ConsumedRecord
from streamfolio.kafka.definitions import DefinitionRead
from streamfolio.messages import PortfolioDefinition, PortfolioMetrics
from streamfolio.portfolio_book import PortfolioBook
from streamfolio.serde import codec_for
from streamfolio.store import schema
from streamfolio.store.schema import open_store
from streamfolio.store.service import StoreOptions, StoreService
from streamfolio.store.writer import StoreWriter, refusal_of

T0 = 1_790_845_200_000
MINUTE = 60_000


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_config(example_config_path(), environ={})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_store(f"sqlite:///{tmp_path}/history.db")
    yield engine
    engine.dispose()


def definition(pid: str, t: int, **more: Any) -> PortfolioDefinition:
    return PortfolioDefinition(t, pid, ("ATW", "BCP"), 60, **more)


def stored(engine: Engine) -> list[tuple[str, int, Any, int | None]]:
    table = schema.portfolio_definitions
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                table.c.portfolio_id, table.c.timestamp_ms, table.c.definition, table.c.kafka_offset
            ).order_by(table.c.timestamp_ms)
        )
        return [tuple(row) for row in rows]


def test_definitions_and_removals_are_rows_keyed_by_portfolio_and_time(engine: Engine) -> None:
    writer = StoreWriter(engine)
    added = DefinitionRead("new", T0, definition("new", T0, notify=("file:/etc/hooks/owner",)))
    removed = DefinitionRead("new", T0 + MINUTE, None)
    assert writer.write([added, removed]) == {"portfolio_definitions": 2}
    writer.write([added])  # read again (the topic at every start): no new row
    rows = stored(engine)
    assert [(pid, t - T0) for pid, t, _, _ in rows] == [("new", 0), ("new", MINUTE)]
    kept = rows[0][2]
    assert kept["tickers"] == ["ATW", "BCP"] and kept["notify"] == ["file:/etc/hooks/owner"]
    assert PortfolioDefinition.from_record(kept) == added.definition
    assert rows[1][2] is None  # the removal


def test_a_definitions_free_text_is_not_held_to_the_ticker_length() -> None:
    row = {"portfolio_id": "p", "definition": {"notify": ["env:" + "N" * 40]}}
    assert refusal_of(schema.portfolio_definitions, row) is None
    nul = {"portfolio_id": "p", "definition": {"owner": "a\x00b"}}
    assert refusal_of(schema.portfolio_definitions, nul) == "definition contains a NUL character"


class FakeConsumer:
    def __init__(self, records: list[ConsumedRecord], drained: threading.Event) -> None:
        self.records = records
        self.drained = drained

    def poll(self, timeout: float = 1.0) -> ConsumedRecord | None:
        if self.records:
            return self.records.pop(0)
        self.drained.set()
        return None

    def commit(self) -> None:
        pass

    def lag(self) -> int | None:
        return 0

    def close(self) -> None:
        pass


class FakeDefinitions:
    """The portfolios topic: ``published`` is read when the service catches up, from its
    ``from_catch_up``-th catch-up on (published after the service started)."""

    def __init__(
        self, service: StoreService, published: list[PortfolioDefinition], from_catch_up: int = 1
    ) -> None:
        self.service = service
        self.published = published
        self.from_catch_up = from_catch_up
        self.catch_ups = 0

    caught_up = True

    def catch_up(self, timeout_s: float = 10.0) -> int:
        self.catch_ups += 1
        if self.catch_ups < self.from_catch_up:
            return 0
        taken = 0
        for offset, d in enumerate(self.published):
            read = DefinitionRead(d.portfolio_id, d.timestamp, d)
            problem = self.service.book.apply(read)
            record = ConsumedRecord("portfolios", 0, offset, b"", d.timestamp, b"", None)
            self.service.on_definition(record, read, problem)
            taken += 1
        self.published = []
        return taken

    def poll_some(self, max_records: int = 100) -> int:
        return 0

    def close(self) -> None:
        pass


def test_records_of_a_portfolio_defined_at_run_time_are_stored(
    settings: Settings, engine: Engine
) -> None:
    weights = {"ATW": 0.5, "BCP": 0.5}
    metrics = PortfolioMetrics(
        "new",
        risk=0.2,
        expected_return=0.1,
        sharpe_ratio=0.5,
        timestamp=T0 + MINUTE,
        count=100,
        weights=weights,
        stats_timestamp=T0 + MINUTE,
    )
    value = codec_for("PortfolioMetrics").encode(metrics.to_record())
    record = ConsumedRecord(settings.topics.metrics, 0, 0, b"new", T0, value, None)
    stop = threading.Event()
    book = PortfolioBook(settings, resolve_notify=False)
    service = StoreService(
        settings,
        StoreOptions(duration_s=5.0, batch_seconds=0.05),
        stop=stop,
        writer=StoreWriter(engine),
        consumer=FakeConsumer([record], stop),
        book=book,
    )
    source = FakeDefinitions(service, [definition("new", T0)], from_catch_up=2)
    service._definitions = source
    stats = service.run()
    assert stats.written["metrics"] == 1 and not stats.skipped
    assert stats.written["portfolio_definitions"] == 1
    assert source.catch_ups == 2  # at the start, and for the record of a portfolio not known
    assert [(pid, t) for pid, t, _, _ in stored(engine)] == [("new", T0)]


def test_definitions_the_book_refuses_are_not_stored(settings: Settings, engine: Engine) -> None:
    stop = threading.Event()
    service = StoreService(
        settings,
        StoreOptions(duration_s=5.0, batch_seconds=0.05),
        stop=stop,
        writer=StoreWriter(engine),
        consumer=FakeConsumer([], stop),
    )
    bad = PortfolioDefinition(T0, "bad", ("NOPE",), 60)
    service._definitions = FakeDefinitions(service, [bad, definition("good", T0)])
    service.run()
    assert [pid for pid, *_ in stored(engine)] == ["good"]
    assert service.book.refused["bad"] == 1
