"""The history store against real services (issue "See it and keep it").

* a Kafka broker (the session's ``kafka_broker``): the store service consumes the pipeline's
  topics into SQLite, commits its offsets, and replays (new group, rewound group) add no rows;
  ``streamfolio store`` stops cleanly on Ctrl-C; the report is written from what was stored;
* a throwaway PostgreSQL cluster, when PostgreSQL is installed: the same writes, replays,
  queries and report on PostgreSQL; and no poison pill stops the store (issue #11): records
  PostgreSQL cannot hold (a NUL character, an over-long portfolio id) are dead-lettered
  ``store_refused`` while the store keeps running and stores the rest.

The history fits the example configuration's portfolios (the store reads through
:class:`~streamfolio.intake.Intake`, which refuses records that do not), keyed by portfolio id.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from streamfolio.config import Settings, example_config_path, load_config, settings_from_mapping
from streamfolio.intake import Intake
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import ConsumedRecord, RecordConsumer, RecordProducer
from streamfolio.kafka.topics import contract
from streamfolio.messages import (
    DeadLetter,
    PortfolioMetrics,
    PortfolioStats,
    RebalanceEvent,
    Weights,
)
from streamfolio.serde import codec_for
from streamfolio.store import queries, schema
from streamfolio.store.report import write_report
from streamfolio.store.schema import open_store
from streamfolio.store.service import StoreOptions, StoreService, StoreStats
from streamfolio.store.writer import Batch, Provenance, StoredMessage, StoreWriter

KafkaBroker = Any  # tests/integration/conftest.py: the session broker fixture

pytestmark = pytest.mark.integration

T0 = 1_790_845_200_000  # 2026-10-01T09:00:00Z
MINUTE = 60_000
BANKS = {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2}
REBALANCED = {"ATW": 0.7, "BCP": 0.2, "BOA": 0.1}
_PORTF1 = load_config(example_config_path(), environ={}).portfolio("portf1").tickers
PORTF1 = {t: 1 / len(_PORTF1) for t in _PORTF1}  # equal weights, within its [0, 0.25] bounds
ROLE = {
    PortfolioMetrics: "metrics",
    PortfolioStats: "updated_stats",
    Weights: "weights",
    RebalanceEvent: "rebalance_events",
}


def _sandbox(broker: KafkaBroker, tmp_path: Path) -> tuple[Settings, Path]:
    """Settings with topics of their own on the session broker, and a YAML file of them."""
    data = yaml.safe_load(broker.config_path.read_text())
    token = uuid.uuid4().hex[:8]
    data["topics"] = {
        role: f"{name.rsplit('-', 1)[0]}-{token}" for role, name in data["topics"].items()
    }
    settings = settings_from_mapping(data)
    ensure_topics(broker.bootstrap, topic_specs(settings))
    path = tmp_path / "streamfolio.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return settings, path


def _history() -> list[StoredMessage]:
    """Two portfolios' worth: 40 metrics each, 20 statistics, 3 weight sets, 2 decisions."""
    history: list[StoredMessage] = []
    for pid, weights in (("banks", BANKS), ("portf1", PORTF1)):
        for i in range(40):
            sharpe = 0.9 - 0.02 * i if i < 25 else 0.8
            history.append(
                PortfolioMetrics(
                    pid, 0.2, 0.1, sharpe, T0 + i * MINUTE, count=100 + i,
                    weights=weights, sharpe_threshold=0.5,
                )
            )  # fmt: skip
    history += [
        PortfolioStats.from_arrays(
            "banks", T0 + i * MINUTE, ["ATW", "BCP", "BOA"], [1e-4, 2e-4, 3e-4],
            [[4e-4, 1e-4, 0.0], [1e-4, 9e-4, 0.0], [0.0, 0.0, 1e-3]],
            count=100 + i, kind="updated", bar_seconds=60,
        )
        for i in range(20)
    ]  # fmt: skip
    history += [
        Weights("banks", T0, BANKS, "initial", "config"),
        Weights("portf1", T0, PORTF1, "initial", "config"),
        Weights("banks", T0 + 25 * MINUTE, REBALANCED, "rebalance", "rebalancer"),
        RebalanceEvent(
            "banks", T0 + 20 * MINUTE, "Sharpe 0.50 at threshold, no gain", "hold_no_improvement",
            BANKS, BANKS, 0.5, 0.5, 0.1, 0.2, 0.0, "optimal",
        ),
        RebalanceEvent(
            "banks", T0 + 25 * MINUTE, "Sharpe 0.40 below threshold 0.50", "rebalance",
            BANKS, REBALANCED, 0.4, 0.8, 0.12, 0.2, 0.4, "optimal",
        ),
    ]  # fmt: skip
    return history


EXPECTED_ROWS = {
    "metrics": 80,
    "statistics": 20,
    "weights": 3,
    "rebalance_events": 2,
    "portfolio_definitions": 0,
}


def _publish(settings: Settings) -> int:
    """Produce the history, a re-sent duplicate and two bad messages; returns how many."""
    producer = RecordProducer(settings.kafka, component="admin")
    history = _history()
    for message in [*history, history[5]]:  # history[5] again: a producer re-sending it
        producer.send(contract(settings, ROLE[type(message)]), message.to_record())  # type: ignore[arg-type]
    metrics = contract(settings, "metrics")
    producer.send_raw(metrics.name, b"banks", b"\x0agarbage")
    nan_risk = history[0].to_record() | {"risk": float("nan"), "timestamp": T0 - MINUTE}
    producer.send(metrics, nan_risk)
    assert producer.flush(30) == 0
    return len(history) + 3


def _run(
    settings: Settings, options: StoreOptions, *, expect: int, timeout: float = 30.0
) -> StoreStats:
    """Run the service until it has read ``expect`` messages (or ``timeout``), then stop it."""
    service = StoreService(settings, options)
    result: list[StoreStats] = []
    thread = threading.Thread(target=lambda: result.append(service.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while service.stats.consumed < expect and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.1)
    service.stop.set()
    thread.join(30)
    assert result, "the service stopped with an error (see the log)"
    return result[0]


def test_store_keeps_history_commits_offsets_and_replays_add_no_rows(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    settings, _ = _sandbox(kafka_broker, tmp_path)
    sent = _publish(settings)
    url = f"sqlite:///{tmp_path}/history.db"
    group = f"store-{uuid.uuid4().hex[:8]}"

    first = _run(settings, StoreOptions(database=url, group_id=group), expect=sent)
    assert first.consumed == sent
    assert dict(first.skipped) == {"undecodable": 1, "invalid_metrics": 1}
    assert first.dead_lettered == 2
    assert queries.row_counts(url) == EXPECTED_ROWS
    assert queries.portfolio_ids(url) == ["banks", "portf1"]
    engine = queries.engine_of(url)
    with engine.connect() as connection:
        topic, offset = connection.execute(
            sa.select(schema.metrics.c.kafka_topic, schema.metrics.c.kafka_offset).limit(1)
        ).one()
    assert topic == settings.topics.metrics and offset >= 0

    # The same group again: its offsets were committed, so there is nothing left to read.
    again = _run(settings, StoreOptions(database=url, group_id=group, duration_s=4.0), expect=1)
    assert again.consumed == 0

    # A new group starts at the oldest message, and rewinding the old one reads it all again:
    # both re-write every row, and neither adds one.
    fresh = _run(settings, StoreOptions(database=url, group_id=f"{group}-2"), expect=sent)
    rewound = _run(
        settings, StoreOptions(database=url, group_id=group, from_beginning=True), expect=sent
    )
    assert fresh.consumed == rewound.consumed == sent
    assert sum(rewound.written.values()) >= sum(EXPECTED_ROWS.values())
    assert queries.row_counts(url) == EXPECTED_ROWS

    out = tmp_path / "banks.html"
    data = write_report(url, "banks", out, "2026-10-01", "2026-10-01")
    page = out.read_text()
    assert len(data.metrics) == 40 and len(data.events) == 2
    assert page.count('src="data:image/png;base64,') == 3
    assert "Sharpe 0.40 below threshold 0.50" in page


def _stored_rows(path: Path, url: str) -> int:
    """Rows in the store so far: none while the command has not made its file and tables (the
    file comes first: on a busy machine a poll can fall between the two)."""
    if not path.exists():
        return 0
    try:
        return sum(queries.row_counts(open_store(url, create=False)).values())
    except schema.StoreError:
        return 0


def test_store_command_stops_cleanly_on_ctrl_c(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    settings, config = _sandbox(kafka_broker, tmp_path)
    sent = _publish(settings)
    url = f"sqlite:///{tmp_path}/history.db"
    # Until the command is registered on the main CLI, run it from an app of its own.
    program = (
        "import typer; from streamfolio.store.cli import register; "
        "app = typer.Typer(); register(app); app()"
    )
    command = [sys.executable, "-c", program, "store", "--config", str(config)]
    command += ["--database", url, "--status-interval", "0.5"]
    store = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if _stored_rows(tmp_path / "history.db", url) == sum(EXPECTED_ROWS.values()):
                break
        time.sleep(0.6)  # at least one status line after the rows are in
        store.send_signal(signal.SIGINT)
        output, _ = store.communicate(timeout=30)
    finally:
        if store.poll() is None:
            store.kill()
            store.wait(10)
        if store.stdout is not None:  # a failure above must not leak the pipe into later tests
            store.stdout.close()
    assert store.returncode == 0, output
    assert "stopping: storing what was read" in output
    final = re.search(r"store stopped: (\d+) read, rows written: (.*)", output)
    assert final is not None, output
    assert int(final.group(1)) == sent, output
    assert "metrics 80, statistics 20, weights 3, rebalance_events 2" in final.group(2)
    assert "skipped 1 invalid_metrics, 1 undecodable" in final.group(2)
    assert re.search(r"store: .* lag 0;", output), "a status line with the lag"
    assert output.count("skipped a message (undecodable)") == 1


# ---------------------------------------------------------------------------------- PostgreSQL


# postgres_url: tests/integration/conftest.py


def test_postgresql_upserts_replays_queries_and_report(postgres_url: str, tmp_path: Path) -> None:
    engine = open_store(postgres_url)
    try:
        assert engine.dialect.name == "postgresql"
        writer = StoreWriter(engine)
        history = _history()
        writer.write(history)
        writer.write(history)  # a replay
        writer.write([*history[:10], *history[:10]])  # duplicates inside one batch
        assert writer.row_counts() == EXPECTED_ROWS
        latest = queries.latest_metrics(engine)
        assert [(m.portfolio_id, m.timestamp_ms) for m in latest] == [
            ("banks", T0 + 39 * MINUTE),
            ("portf1", T0 + 39 * MINUTE),
        ]
        stats = queries.statistics_between(engine, "banks", kind="updated")
        assert len(stats) == 20 and stats[0].covariance["ATW"]["BCP"] == 1e-4
        (done,) = queries.rebalances(engine, "banks", decisions=["rebalance"])
        assert done.new_weights == REBALANCED
        with engine.connect() as connection:
            when = connection.execute(sa.select(schema.metrics.c.event_time).limit(1)).scalar()
        assert when is not None and when.utcoffset() is not None, "timestamptz on PostgreSQL"
        out = tmp_path / "pg.html"
        write_report(engine, "banks", out, "2026-10-01T09:00Z", "2026-10-01T10:00Z")
        assert out.read_text().count('src="data:image/png;base64,') == 3
    finally:
        engine.dispose()


# ------------------------------------------------------------- no poison pill stops the store

NUL_ID = "ban\x00ks"
LONG_ID = "p" * 65


def _read_all(settings: Settings, role: Any, *, idle_s: float = 5.0) -> list[ConsumedRecord]:
    """Every record of the topic with ``role``, from its oldest (no group offsets used)."""
    with RecordConsumer(
        settings.kafka,
        [contract(settings, role)],
        component="admin",
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        from_beginning=True,
        assign_all=True,
    ) as reader:
        return list(reader.records(timeout=idle_s))


def test_postgresql_refuses_record_by_record_and_keeps_the_rest(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the store's own checks switched off, PostgreSQL's refusals (NUL in text and in JSONB,
    a too-long varchar, a bigint overflow) are found by the per-record fallback."""
    monkeypatch.setattr("streamfolio.store.writer.refusal_of", lambda *_: None)
    engine = open_store(postgres_url)
    try:
        good = _history()[:6]  # banks metrics 0..5
        hostile = [
            PortfolioMetrics(NUL_ID, 0.2, 0.1, 0.5, T0, count=1, weights={"ATW": 1.0}),
            PortfolioMetrics(LONG_ID, 0.2, 0.1, 0.5, T0, count=1, weights={"ATW": 1.0}),
            PortfolioMetrics("x", 0.2, 0.1, 0.5, T0, count=1, weights={"AT\x00W": 1.0}),
            PortfolioMetrics("y", 0.2, 0.1, 0.5, T0, count=2**64, weights={"ATW": 1.0}),
        ]
        batch = Batch()
        for offset, message in enumerate([*good[:3], *hostile, *good[3:]]):
            batch.add(message, Provenance("metrics", 0, offset))
        result = StoreWriter(engine).write_batch(batch)
        assert result.written == {"metrics": 6}
        assert [r.provenance.offset for r in result.refused] == [3, 4, 5, 6]
        reasons = [r.reason for r in result.refused]
        assert "NUL" in reasons[0] and "character varying(64)" in reasons[1], reasons
        assert all("\n" not in r and "INSERT" not in r and "postgres@" not in r for r in reasons)
        assert queries.portfolio_ids(engine) == ["banks"]
    finally:
        engine.dispose()


def test_store_dead_letters_what_postgresql_cannot_hold_and_keeps_running(
    kafka_broker: KafkaBroker, postgres_url: str, tmp_path: Path
) -> None:
    settings, _ = _sandbox(kafka_broker, tmp_path)
    metrics = contract(settings, "metrics")
    producer = RecordProducer(settings.kafka, component="admin")

    def send(messages: list[PortfolioMetrics]) -> None:
        for message in messages:
            producer.send(metrics, message.to_record())
        assert producer.flush(30) == 0

    first = [m for m in _history() if isinstance(m, PortfolioMetrics)][:10]  # banks 0..9
    hostile = [
        PortfolioMetrics(NUL_ID, 0.2, 0.1, 0.5, T0, count=1, weights={"ATW": 1.0}),
        PortfolioMetrics(LONG_ID, 0.2, 0.1, 0.5, T0, count=1, weights={"ATW": 1.0}),
    ]
    send([*first[:5], *hostile, *first[5:]])

    # A store that archives everything (no configured portfolios, any time): what it refuses
    # is only what PostgreSQL cannot hold. With the configuration's portfolios, the intake
    # refuses these two ids before the database sees them (``unknown_portfolio``: no
    # configuration can name them), tested in tests/store/test_store_hostile.py.
    service = StoreService(
        settings,
        StoreOptions(database=postgres_url, group_id=f"store-{uuid.uuid4().hex[:8]}"),
        intake=Intake(None, max_future_skew_ms=None),
    )
    result: list[StoreStats] = []
    thread = threading.Thread(target=lambda: result.append(service.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while service.stats.dead_lettered < 2 and thread.is_alive():
            assert time.monotonic() < deadline, f"no dead letters: {service.stats.line()}"
            time.sleep(0.2)
        # Still running: what comes after the poison pills is stored too.
        later = [
            PortfolioMetrics("portf1", 0.2, 0.1, 0.5, T0 + i * MINUTE, count=i, weights=PORTF1)
            for i in range(5)
        ]
        send(later)
        while service.stats.consumed < 17 and thread.is_alive():
            assert time.monotonic() < deadline, f"stalled: {service.stats.line()}"
            time.sleep(0.2)
        assert thread.is_alive(), "the store stopped on a poison pill"
    finally:
        service.stop.set()
        thread.join(30)
    assert result, "the service stopped with an error (see the log)"
    stats = result[0]
    assert dict(stats.skipped) == {"store_refused": 2}
    assert "skipped 2 store_refused; dead-lettered 2" in stats.line()
    engine = open_store(postgres_url, create=False)
    try:
        assert queries.row_counts(engine)["metrics"] == 15
        assert queries.portfolio_ids(engine) == ["banks", "portf1"]
    finally:
        engine.dispose()

    # The dead-letter topic holds the two, with where they were read and their original bytes.
    sources = {
        r.record["portfolioId"]: r
        for r in _read_all(settings, "metrics")
        if r.record is not None and r.record["portfolioId"] in (NUL_ID, LONG_ID)
    }
    codec = codec_for("DeadLetter")
    letters = [
        DeadLetter.from_record(codec.decode(r.value)) for r in _read_all(settings, "dead_letter")
    ]
    assert len(letters) == 2, letters
    by_source = {(d.partition, d.offset): d for d in letters}
    for pid, problem in ((NUL_ID, "NUL"), (LONG_ID, "longer than the 64")):
        source = sources[pid]
        letter = by_source[(source.partition, source.offset)]
        assert letter.reason == "store_refused" and letter.component == "store"
        assert letter.source_topic == settings.topics.metrics
        assert letter.payload == source.value and letter.key == source.key
        assert letter.detail.startswith("metrics: ") and "\n" not in letter.detail
        assert problem in letter.detail

    # The offsets were committed past them: the same group has nothing left to read.
    again = _run(
        settings,
        StoreOptions(database=postgres_url, group_id=service.options.group_id, duration_s=4.0),
        expect=1,
    )
    assert again.consumed == 0
