"""Portfolios as data in the job's functions: definitions added, changed and removed while ticks
flow, against the replay given the same definitions at the same places (no JVM, no Kafka)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from test_flink_operators import (
    START,
    Step,
    assert_same_as_replay,
    decoded,
    random_ticks,
    reasons,
    run_both,
    seed_record,
    settings,
    weights_record,
)

from streamfolio.config import Settings
from streamfolio.core.moments import moments_from_prior, stats_record
from streamfolio.flink.routing import shard_of
from streamfolio.flink.state import load_panels, load_portfolio_state
from streamfolio.messages import PortfolioDefinition
from streamfolio.portfolios import definition_of


def _entry(pid: str, tickers: list[str], **more: Any) -> dict[str, Any]:
    return {"id": pid, "tickers": tickers, "bar_seconds": 1, "periods_per_year": 1000, **more}


def _definition(s: Settings, entry: dict[str, Any], at: int) -> PortfolioDefinition:
    from streamfolio.portfolios import portfolios_from_entries

    return definition_of(portfolios_from_entries([entry], s)[0], at)


def _seed(pid: str, tickers: list[str], at: int) -> dict[str, Any]:
    n = len(tickers)
    moments = moments_from_prior(np.full(n, 1e-4), np.eye(n) * 1e-4 + 1e-5, 30)
    return stats_record(moments, pid, tickers, at)


def test_added_changed_and_removed_portfolios_follow_their_definitions_as_the_replay() -> None:
    s = settings()
    ticks = random_ticks(4, n_bars=80)
    steps: list[Step] = [
        ("stats", seed_record("p1", START)),
        ("stats", seed_record("p2", START)),
        ("weights", weights_record("p1", START, {"AAA": 0.5, "BBB": 0.5})),
    ]
    half = len(ticks) // 3
    steps += [("tick", t) for t in ticks[:half]]
    # Each ahead of the watermark when read (a definition read late takes effect on arrival).
    added, changed = START + 40_000, START + 45_000
    restarted, removed = START + 58_000, START + 70_000
    p3 = _entry("p3", ["AAA", "CCC"])
    steps += [  # a new portfolio: its definition, initial statistics and weights
        ("define", _definition(s, p3, added)),
        ("stats", _seed("p3", ["AAA", "CCC"], added)),
        ("weights", weights_record("p3", added, {"AAA": 0.3, "CCC": 0.7})),
        # p1's risk-free rate changes: its moments carry on
        ("define", _definition(s, _entry("p1", ["AAA", "BBB"], risk_free_rate=0.2), changed)),
    ]
    steps += [("tick", t) for t in ticks[half : 2 * half]]
    p3_more = _entry("p3", ["AAA", "BBB", "CCC"])
    steps += [  # p3 gains a ticker: it starts again from new initial statistics and weights
        ("define", _definition(s, p3_more, restarted)),
        ("stats", _seed("p3", ["AAA", "BBB", "CCC"], restarted)),
        ("weights", weights_record("p3", restarted, {"AAA": 0.2, "BBB": 0.3, "CCC": 0.5})),
        ("remove", ("p1", removed)),
    ]
    steps += [("tick", t) for t in ticks[2 * half :]]
    pipeline, events = run_both(steps, s)
    assert_same_as_replay(pipeline, events)
    assert not reasons(pipeline)
    metrics = decoded(pipeline.metrics, "PortfolioMetrics", "portfolioId")
    p3_metrics = metrics["p3"]
    assert p3_metrics and min(m["timestamp"] for m in p3_metrics) >= added
    assert {tuple(sorted(m["weights"])) for m in p3_metrics if m["timestamp"] > restarted} == {
        ("AAA", "BBB", "CCC")
    }
    p1 = metrics["p1"]
    assert max(m["timestamp"] for m in p1) <= removed  # nothing after its removal
    assert {m["riskFreeRate"] for m in p1 if m["timestamp"] > changed} == {0.2}
    # The removed portfolio's keyed state holds nothing but the fact of its removal.
    shard = str(shard_of("p1"))
    state = load_portfolio_state(pipeline.portfolios.stores[("roster", shard)]["p1"])
    assert state["spec"] is False
    assert (state["monitor"], state["bars"], state["pending"]) == (None, {}, [])
    assert not state["in_panel"]
    panels = load_panels(pipeline.portfolios.stores[("panels", shard)]["value"])
    assert all("p1" not in ids for ids, _ in panels.values())
    # ...and no shard sends it anything.
    memberships = [
        json.loads(v["value"])["changed"]
        for (name, _), v in pipeline.shards.stores.items()
        if name == "membership" and "value" in v
    ]
    of_p1 = [changed["p1"] for changed in memberships if "p1" in changed]
    assert of_p1 and all(tickers is None for tickers in of_p1)


def test_controls_of_a_portfolio_never_defined_are_dead_letters_when_their_time_comes() -> None:
    s = settings()
    ticks = random_ticks(5, n_bars=20)
    steps: list[Step] = [("stats", seed_record("p1", START)), ("stats", seed_record("p2", START))]
    steps.append(("weights", weights_record("ghost", START + 5_000, {"AAA": 1.0})))
    steps += [("tick", t) for t in ticks]
    pipeline, events = run_both(steps, s)
    assert reasons(pipeline) == {"unknown_portfolio": 1}
    assert [e.record["reason"] for e in events if e.kind == "dead_letter"] == ["unknown_portfolio"]
    assert_same_as_replay(pipeline, events)
