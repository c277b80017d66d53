"""Every SQL query of deploy/grafana's dashboards (panels, the $portfolio variable, the
rebalance annotations) runs against a real PostgreSQL store written by the store's writer, with
Grafana's macros and variables substituted, and the panels find what was stored."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamfolio.messages import PortfolioMetrics, RebalanceEvent, Weights
from streamfolio.store.schema import open_store
from streamfolio.store.writer import StoredMessage, StoreWriter

# The dashboards' queries, as tests/deploy/test_grafana.py reads them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from grafanakit import STORE_UID, queries, substitute

pytestmark = pytest.mark.integration

T0 = 1_790_845_200_000  # 2026-10-01T09:00:00Z
MINUTE = 60_000
BEFORE = {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2}
AFTER = {"ATW": 0.7, "BCP": 0.2, "BOA": 0.1}


def _history() -> list[StoredMessage]:
    """30 minutes of one portfolio: metrics each minute, weights, a hold and a rebalance."""
    history: list[StoredMessage] = [
        PortfolioMetrics(
            "banks", 0.2, 0.1, 0.9 - 0.02 * i, T0 + i * MINUTE, count=100 + i,
            weights=BEFORE if i < 25 else AFTER, sharpe_threshold=0.5,
        )
        for i in range(30)
    ]  # fmt: skip
    history += [
        Weights("banks", T0, BEFORE, "initial", "config"),
        Weights("banks", T0 + 25 * MINUTE, AFTER, "rebalance", "rebalancer"),
        RebalanceEvent(
            "banks", T0 + 20 * MINUTE, "Sharpe 0.50 at threshold, no gain", "hold_no_improvement",
            BEFORE, BEFORE, 0.5, 0.5, 0.1, 0.2, 0.0, "optimal",
        ),
        RebalanceEvent(
            "banks", T0 + 25 * MINUTE, "Sharpe 0.40 below threshold 0.50", "rebalance",
            BEFORE, AFTER, 0.4, 0.8, 0.12, 0.2, 0.4, "optimal",
        ),
    ]  # fmt: skip
    return history


def test_every_store_query_runs_and_finds_the_stored_history(postgres_url: str) -> None:
    engine = open_store(postgres_url)
    try:
        StoreWriter(engine).write(_history())
        found: dict[str, list[sa.Row[tuple[object, ...]]]] = {}
        with engine.connect() as connection:
            for query in queries():
                if query.datasource != STORE_UID:
                    continue
                sql = substitute(
                    query.text,
                    portfolio="banks",
                    start="2026-10-01T08:00:00Z",
                    end="2026-10-01T10:00:00Z",
                )
                found[query.where] = list(connection.execute(sa.text(sql)))
    finally:
        engine.dispose()
    assert len(found) == 7, sorted(found)  # 5 panels, the variable, the annotations
    assert found["variable $portfolio"] == [("banks",)]
    sharpe = found["panel 'Sharpe ratio' A"]
    assert len(sharpe) == 30 and sharpe[0][1:] == (0.9, 0.5)
    weights = found["panel 'Weights' A"]
    assert len(weights) == 30 * 3 and {row[1] for row in weights} == set(BEFORE)
    assert [row[1] for row in weights[-3:]] == ["ATW", "BCP", "BOA"]
    assert [row[2] for row in weights[-3:]] == [0.7, 0.2, 0.1]
    annotations = found["annotation 'Rebalances'"]
    assert [row[2] for row in annotations] == ["hold_no_improvement", "rebalance"]
    assert annotations[1][1] == "rebalance: Sharpe 0.40 below threshold 0.50"
    assert [row[1] for row in found["panel 'Rebalance decisions' A"]] == [
        "rebalance",
        "hold_no_improvement",
    ]
    for where, rows in found.items():
        assert rows, f"{where}: no rows"
