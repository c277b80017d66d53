"""The rebalancer follows the portfolios topic (no broker): a portfolio defined at run time is
decided with its own policy, a changed policy applies to the bars ending after its time, and a
removed portfolio's later metrics are not decided."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.metrics import portfolio_performance
from streamfolio.kafka.definitions import DefinitionRead
from streamfolio.messages import PortfolioDefinition, PortfolioMetrics, PortfolioStats
from streamfolio.portfolio_book import PortfolioBook
from streamfolio.rebalancer.decider import Decider
from streamfolio.rebalancer.follower import MemoryReader
from streamfolio.rebalancer.memory import Memory, PortfolioMemory
from streamfolio.serde import codec_for

TICKERS = ("AAA", "BBB")
Q = 252.0
COV = np.eye(2) * 1e-4
GOOD_FIRST = (0.001, -0.0002)
MOSTLY_SECOND = {"AAA": 0.2, "BBB": 0.8}  # Sharpe about 0.077 a year: below 1.0, above 0.01
T0 = 1_790_845_200_000
MINUTE = 60_000


def configured() -> Settings:
    return settings_from_mapping(
        {
            "exchange": {"universe": ["AAA", "BBB", "CCC"]},
            "portfolios": [
                {
                    "id": "p",
                    "tickers": list(TICKERS),
                    "periods_per_year": Q,
                    "risk_free_rate": 0.0,
                    "gamma": 0.0,
                    "policy": {"sharpe_threshold": 1.0, "min_observations": 20},
                }
            ],
        }
    )


def definition(pid: str, t: int, threshold: float, **more: Any) -> DefinitionRead:
    d = PortfolioDefinition(
        t,
        pid,
        more.pop("tickers", TICKERS),
        60,
        periods_per_year=Q,
        risk_free_rate=0.0,
        gamma=0.0,
        policy={"sharpe_threshold": threshold, "min_observations": 20},
        **more,
    )
    return DefinitionRead(pid, t, d)


def stats_of(pid: str, ts: int) -> PortfolioStats:
    return PortfolioStats.from_arrays(pid, ts, TICKERS, GOOD_FIRST, COV, count=100, kind="updated")


def metrics_of(
    stats: PortfolioStats, weights: Mapping[str, float] = MOSTLY_SECOND
) -> PortfolioMetrics:
    w = np.array([weights[t] for t in TICKERS])
    perf = portfolio_performance(
        w, stats.mean_vector(), stats.covariance_matrix(), periods_per_year=Q
    )
    return PortfolioMetrics(
        stats.portfolio_id,
        risk=perf.risk,
        expected_return=perf.expected_return,
        sharpe_ratio=perf.sharpe,
        timestamp=stats.timestamp,
        count=stats.count,
        weights=dict(weights),
        stats_timestamp=stats.timestamp,
    )


def kind_at(decider: Decider, pid: str, ts: int) -> str:
    stats = stats_of(pid, ts)
    return decider.decide(metrics_of(stats), stats, PortfolioMemory()).kind


def test_a_portfolio_defined_on_the_topic_is_decided_with_its_own_threshold() -> None:
    book = PortfolioBook(configured(), environ={})
    decider = Decider(configured(), book=book)
    assert book.apply(definition("lax", T0, 0.01)) is None
    assert book.apply(definition("strict", T0, 5.0)) is None
    assert decider.portfolio_ids == ("p", "lax", "strict")
    assert kind_at(decider, "p", T0 + MINUTE) == "rebalance"  # below 1.0
    assert kind_at(decider, "strict", T0 + MINUTE) == "rebalance"
    assert kind_at(decider, "lax", T0 + MINUTE) == "unchanged"  # above 0.01
    # The bar ending at its time is not the new portfolio's.
    assert kind_at(decider, "strict", T0) == "removed"


def test_the_intake_knows_a_portfolio_as_soon_as_the_book_does() -> None:
    book = PortfolioBook(configured(), environ={})
    decider = Decider(configured(), book=book)
    stats = stats_of("new", T0 + MINUTE)
    value = codec_for("PortfolioMetrics").encode(metrics_of(stats).to_record())
    try:
        decider.metrics_from(value, b"new")
    except Exception as exc:
        assert getattr(exc, "reason", None) == "unknown_portfolio"
    else:
        raise AssertionError("an undefined portfolio's metrics were accepted")
    book.apply(definition("new", T0, 1.0))
    assert decider.metrics_from(value, b"new").portfolio_id == "new"
    raw_stats = codec_for("PortfolioStats").encode(stats.to_record())
    assert decider.stats_from(raw_stats, b"new").tickers == TICKERS


def test_a_changed_policy_applies_to_metrics_stamped_after_its_time() -> None:
    book = PortfolioBook(configured(), environ={})
    decider = Decider(configured(), book=book)
    book.apply(definition("p", T0, 0.01))  # p relaxed at T0
    assert kind_at(decider, "p", T0) == "rebalance"  # the bar ending at T0: the old policy
    assert kind_at(decider, "p", T0 + MINUTE) == "unchanged"
    book.apply(definition("p", T0 + 2 * MINUTE, 1.0))
    assert kind_at(decider, "p", T0 + 3 * MINUTE) == "rebalance"


def test_a_removed_portfolios_later_metrics_are_not_decided() -> None:
    book = PortfolioBook(configured(), environ={})
    decider = Decider(configured(), book=book)
    book.apply(DefinitionRead("p", T0, None))
    assert kind_at(decider, "p", T0) == "rebalance"  # still there for the bar ending at T0
    outcome = decider.decide(
        metrics_of(stats_of("p", T0 + MINUTE)), stats_of("p", T0 + MINUTE), PortfolioMemory()
    )
    assert outcome.kind == "removed" and outcome.event is None and outcome.weights is None
    assert decider.portfolio_ids == ()


def test_notify_targets_of_a_definition_are_resolved_in_the_rebalancers_environment() -> None:
    book = PortfolioBook(configured(), environ={"HOOK": "json://localhost:9/owner"})
    decider = Decider(configured(), book=book)
    book.apply(definition("told", T0, 5.0, notify=("env:HOOK",)))
    stats = stats_of("told", T0 + MINUTE)
    outcome = decider.decide(metrics_of(stats), stats, PortfolioMemory())
    assert outcome.kind == "rebalance" and outcome.notification is not None
    assert outcome.notification.urls == ("json://localhost:9/owner",)


def test_a_seed_read_before_its_definition_is_judged_again_after_reading_the_topic() -> None:
    settings = configured()
    book = PortfolioBook(settings, environ={})
    memory = Memory(book.tickers)
    decider = Decider(settings, book=book)
    pending = [definition("late", T0, 1.0)]

    def refresh() -> int:
        taken = len(pending)
        while pending:
            book.apply(pending.pop())
        return taken

    reader = MemoryReader(memory, decider.intake, refresh)
    seed = PortfolioStats.from_arrays(
        "late", T0, TICKERS, GOOD_FIRST, COV, count=50, kind="initial"
    )
    value = codec_for("PortfolioStats").encode(seed.to_record())
    assert reader.read("initial_stats", value, b"late")
    assert memory.initial_stats("late", T0) is not None and not reader.skipped
    # Nothing new on the topic: refused and counted.
    ghost = PortfolioStats.from_arrays("ghost", T0, TICKERS, GOOD_FIRST, COV, count=50)
    ghost_value = codec_for("PortfolioStats").encode(ghost.to_record())
    assert not reader.read("initial_stats", ghost_value, b"ghost")
    assert reader.skipped["unknown_portfolio"] == 1
