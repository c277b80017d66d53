"""``streamfolio portfolio add | update | remove | list | show`` against a real broker: what
each writes to the portfolios, initial-statistics and weights topics, and how it refuses."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import Settings, settings_from_mapping
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import RecordConsumer
from streamfolio.kafka.topics import contract

if TYPE_CHECKING:
    from conftest import KafkaBroker

pytestmark = pytest.mark.integration

AT = "2026-10-01T10:00:00Z"
AT_MS = 1_790_848_800_000
GROWTH = {"id": "growth", "tickers": ["IAM", "ATW", "BCP"], "bar_seconds": 300, "owner": "Salma"}


@pytest.fixture
def config(kafka_broker: KafkaBroker, tmp_path: Path) -> tuple[Settings, Path]:
    data = yaml.safe_load(kafka_broker.config_path.read_text())
    token = uuid.uuid4().hex[:8]
    data["topics"] = {role: f"{role}-{token}" for role in data["topics"]}
    settings = settings_from_mapping(data)
    ensure_topics(kafka_broker.bootstrap, topic_specs(settings))
    path = tmp_path / "streamfolio.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return settings, path


def _run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["portfolio", *args, "--config", str(config)])
    return result.exit_code, result.output


def _file(tmp: Path, name: str, entry: dict[str, Any]) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(entry))
    return path


def _records(settings: Settings, role: str) -> list[tuple[bytes | None, bytes, int]]:
    """(key, value, Kafka timestamp) of every record of a topic, in offset order per key."""
    topic = contract(settings, role)  # type: ignore[arg-type]
    found = []
    with RecordConsumer(
        settings.kafka,
        [topic],
        component="admin",
        group_id=f"t-{uuid.uuid4().hex[:8]}",
        from_beginning=True,
        assign_all=True,
        decode=False,
    ) as consumer:
        for item in consumer.records(timeout=3.0):
            found.append((item.key, item.value, item.timestamp_ms))
    return found


def test_add_list_show_update_and_remove_a_portfolio(
    config: tuple[Settings, Path], tmp_path: Path
) -> None:
    from streamfolio.serde import codec_for

    settings, path = config
    code, out = _run(path, "add", str(_file(tmp_path, "growth", GROWTH)), "--at", AT)
    assert code == 0, out
    assert "added portfolio growth with new initial statistics and weights" in out

    # Its definition, a seed and weights, all stamped with its time.
    ((key, value, stamp),) = _records(settings, "portfolios")
    definition = codec_for("PortfolioDefinition").decode(value)
    assert (key, stamp, definition["timestamp"]) == (b"growth", AT_MS, AT_MS)
    assert definition["tickers"] == ["IAM", "ATW", "BCP"] and definition["owner"] == "Salma"
    seeds = [
        codec_for("PortfolioStats").decode(v) for k, v, _ in _records(settings, "initial_stats")
    ]
    assert [(s["portfolio_id"], s["timestamp"], s["tickers"]) for s in seeds] == [
        ("growth", AT_MS, ["IAM", "ATW", "BCP"])
    ]
    (weights,) = [codec_for("Weights").decode(v) for _, v, _ in _records(settings, "weights")]
    assert set(weights["weights"]) == {"IAM", "ATW", "BCP"}
    assert abs(sum(weights["weights"].values()) - 1) < 1e-9

    code, out = _run(path, "add", str(_file(tmp_path, "growth", GROWTH)))
    assert code == 2 and "portfolios[growth].id" in out and "portfolio update" in out

    code, out = _run(path, "list", "--json")
    listed = {row["id"]: row for row in map(json.loads, out.splitlines())}
    assert listed["growth"]["from"] == "topic" and listed["growth"]["since_ms"] == AT_MS
    assert {p.id for p in settings.portfolios} <= set(listed)
    code, out = _run(path, "show", "growth")
    assert code == 0 and json.loads(out)["bar_seconds"] == 300

    # A new threshold: the definition alone; a new ticker: new initial state too.
    calmer = {**GROWTH, "policy": {"sharpe_threshold": 0.2}}
    code, out = _run(path, "update", str(_file(tmp_path, "calmer", calmer)), "--at", AT)
    assert code == 0 and "changed portfolio growth" in out and "initial" not in out
    wider = {**GROWTH, "tickers": ["IAM", "ATW", "BCP", "BOA"]}
    code, out = _run(path, "update", str(_file(tmp_path, "wider", wider)), "--at", AT)
    assert code == 0 and "restarted portfolio growth with new initial" in out
    assert len(_records(settings, "initial_stats")) == 2
    slower = {**GROWTH, "bar_seconds": 60}
    code, out = _run(path, "update", str(_file(tmp_path, "slower", slower)))
    assert code == 2 and "portfolios[growth].bar_seconds" in out

    code, out = _run(path, "remove", "growth", "--at", AT)
    assert code == 0 and "removed portfolio growth" in out
    key, value, stamp = _records(settings, "portfolios")[-1]
    assert (key, value, stamp) == (b"growth", b"", AT_MS)  # a tombstone
    code, out = _run(path, "list")
    assert "growth" not in out
    code, out = _run(path, "remove", "growth")
    assert code == 2 and "no portfolio 'growth'" in out


def test_a_portfolio_the_job_cannot_compute_is_refused_naming_the_key(
    config: tuple[Settings, Path], tmp_path: Path
) -> None:
    _, path = config
    unknown = {"id": "exotic", "tickers": ["IAM", "XYZ"]}
    code, out = _run(path, "add", str(_file(tmp_path, "exotic", unknown)))
    assert code == 2
    assert "portfolios[exotic].tickers" in out and "exchange.universe" in out
    odd_bars = {"id": "odd", "tickers": ["IAM"], "bar_seconds": 900}
    code, out = _run(path, "add", str(_file(tmp_path, "odd", odd_bars)))
    assert code == 2 and "flink.bar_seconds" in out
    bad_weights = {"id": "bad", "tickers": ["IAM", "ATW"], "weights": {"IAM": 0.9, "ATW": 0.3}}
    code, out = _run(path, "add", str(_file(tmp_path, "bad", bad_weights)))
    assert code == 2 and "portfolios[bad].weights" in out and "sum to 1" in out
