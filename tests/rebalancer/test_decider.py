"""The rebalancer's decisions, without Kafka: :class:`Decider` and the memory it relies on.

A two-asset portfolio ``p`` (tickers ``AAA``, ``BBB``), 252 bars a year, no risk-free rate, with
uncorrelated per-bar variance 1e-4. ``GOOD_FIRST`` makes AAA a winner (Sharpe 1.59 alone) and
BBB a loser, so weights mostly in BBB are far below the threshold 1.0 and the optimum is AAA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.metrics import portfolio_performance
from streamfolio.core.policy import PolicyState
from streamfolio.intake import Intake, Rejected
from streamfolio.messages import PortfolioMetrics, PortfolioStats, RebalanceEvent, Weights
from streamfolio.rebalancer.decider import Decider, Outcome
from streamfolio.rebalancer.follower import MemoryReader
from streamfolio.rebalancer.memory import Memory, PortfolioMemory, state_after
from streamfolio.serde import codec_for

TICKERS = ("AAA", "BBB")
Q = 252.0
COV = np.eye(2) * 1e-4
GOOD_FIRST = np.array([0.001, -0.0002])
MOSTLY_SECOND = {"AAA": 0.2, "BBB": 0.8}
T0 = 1_790_845_200_000  # 2026-10-01 09:00 UTC
MINUTE = 60_000


def make_settings(**policy: Any) -> Settings:
    return settings_from_mapping(
        {
            "portfolios": [
                {
                    "id": "p",
                    "owner": "ana",
                    "tickers": list(TICKERS),
                    "weights": {"AAA": 0.5, "BBB": 0.5},
                    "periods_per_year": Q,
                    "risk_free_rate": 0.0,
                    "gamma": 0.0,
                    "notify": ["json://localhost:9/hook"],
                    "policy": {
                        "sharpe_threshold": 1.0,
                        "band": 0.1,
                        "cooldown_seconds": 60,
                        "min_improvement": 0.05,
                        "max_turnover": 1.0,
                        "min_observations": 20,
                        **policy,
                    },
                }
            ]
        }
    )


def stats_at(
    ts: int, mean: Sequence[float] = tuple(GOOD_FIRST), count: int = 100
) -> PortfolioStats:
    return PortfolioStats.from_arrays("p", ts, TICKERS, mean, COV, count=count, kind="updated")


def metrics_for(
    stats: PortfolioStats, weights: Mapping[str, float], ts: int | None = None
) -> PortfolioMetrics:
    w = np.array([weights[t] for t in TICKERS])
    perf = portfolio_performance(
        w, stats.mean_vector(), stats.covariance_matrix(), periods_per_year=Q
    )
    return PortfolioMetrics(
        "p",
        risk=perf.risk,
        expected_return=perf.expected_return,
        sharpe_ratio=perf.sharpe,
        timestamp=stats.timestamp if ts is None else ts,
        count=stats.count,
        weights=dict(weights),
        stats_timestamp=stats.timestamp,
    )


def first_rebalance(decider: Decider) -> Outcome:
    stats = stats_at(T0)
    outcome = decider.decide(metrics_for(stats, MOSTLY_SECOND), stats, PortfolioMemory())
    assert outcome.kind == "rebalance", outcome.detail
    return outcome


# ------------------------------------------------------------------------------------ rebalance


def test_a_sharpe_below_threshold_publishes_weights_and_an_event_stamped_in_event_time() -> None:
    decider = Decider(make_settings())
    outcome = first_rebalance(decider)

    weights, event = outcome.weights, outcome.event
    assert weights is not None and event is not None
    assert weights.timestamp == T0 and event.timestamp == T0, "the metrics' time, not the clock"
    assert weights.portfolio_id == "p" and weights.source == "rebalancer"
    assert list(weights.weights) == list(TICKERS), "in ticker order"
    assert sum(weights.weights.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(0.0 <= w <= 1.0 for w in weights.weights.values()), "long-only, within bounds"
    assert weights.weights["AAA"] == pytest.approx(1.0, abs=1e-6), "all in the winner"

    assert event.event_id == RebalanceEvent.make_event_id("p", T0) == f"p@{T0}"
    assert event.decision == "rebalance"
    assert event.old_weights == MOSTLY_SECOND and event.new_weights == weights.weights
    assert event.sharpe_before < 1.0 < event.sharpe_after
    assert event.sharpe_after == pytest.approx(1.587, abs=1e-3)
    assert event.turnover == pytest.approx(0.8, abs=1e-6), "one-way: ½·Σ|Δw|"
    assert event.optimizer_status == "optimal"
    assert event.risk_after > 0 and event.expected_return_after > 0
    # The records fit their schemas (the service encodes exactly these).
    assert Weights.from_record(weights.to_record()) == weights
    assert RebalanceEvent.from_record(event.to_record()) == event


def test_the_same_inputs_give_the_same_records() -> None:
    a, b = first_rebalance(Decider(make_settings())), first_rebalance(Decider(make_settings()))
    assert a.weights is not None and b.weights is not None
    assert a.event is not None and b.event is not None
    assert a.weights.to_record() == b.weights.to_record()
    assert a.event.to_record() == b.event.to_record()


def test_the_owner_is_told_of_a_rebalance_with_the_new_weights() -> None:
    outcome = first_rebalance(Decider(make_settings()))
    note = outcome.notification
    assert note is not None and note.kind == "rebalance"
    assert note.urls == ("json://localhost:9/hook",) and note.owner == "ana"
    assert "p" in note.title and "Hello ana" in note.body
    assert outcome.event is not None and outcome.event.reason in note.body
    assert "AAA 100.00 %, BBB 0.00 %" in note.body


def test_the_turnover_cap_moves_part_way() -> None:
    outcome = first_rebalance(Decider(make_settings(max_turnover=0.3)))
    assert outcome.weights is not None and outcome.event is not None
    assert outcome.weights.weights == pytest.approx({"AAA": 0.5, "BBB": 0.5})
    assert outcome.event.turnover == pytest.approx(0.3)


# --------------------------------------------------------------------------------- no thrashing


def test_metrics_still_computed_with_the_replaced_weights_are_stale() -> None:
    decider = Decider(make_settings())
    done = first_rebalance(decider)
    later = stats_at(T0 + 5 * MINUTE, mean=[0.0002, 0.0001])  # worse, and after the cool-down
    outcome = decider.decide(metrics_for(later, MOSTLY_SECOND), later, done.memory)
    assert outcome.kind == "stale"
    assert outcome.event is None and outcome.weights is None and outcome.memory == done.memory


def test_right_after_a_rebalance_the_new_weights_are_held() -> None:
    decider = Decider(make_settings())
    # AAA alone has Sharpe 1.05: above the threshold 1.0, inside the band (up to 1.1).
    mean = [1.05 / (100 * np.sqrt(Q)), -0.0002]
    stats = stats_at(T0, mean=mean)
    done = decider.decide(metrics_for(stats, MOSTLY_SECOND), stats, PortfolioMemory())
    assert done.kind == "rebalance" and done.weights is not None
    # The job applied the new weights; a bar later, nothing has changed.
    later = stats_at(T0 + MINUTE, mean=mean)
    outcome = decider.decide(metrics_for(later, done.weights.weights), later, done.memory)
    assert outcome.kind == "unchanged", outcome.detail
    assert outcome.event is None and outcome.weights is None
    assert outcome.memory == done.memory


def test_leaving_the_band_upwards_re_arms_without_trading() -> None:
    decider = Decider(make_settings())
    done = first_rebalance(decider)  # to Sharpe 1.59, above threshold + band
    assert done.weights is not None
    later = stats_at(T0 + MINUTE)
    outcome = decider.decide(metrics_for(later, done.weights.weights), later, done.memory)
    assert outcome.kind == "rearm" and outcome.weights is None and outcome.notification is None
    assert outcome.event is not None and outcome.event.decision == "rearm"
    assert outcome.event.reason.startswith("re-armed: sharpe 1.59 at or above threshold")
    assert outcome.memory.policy.armed
    # Armed and well above the threshold: nothing more to say.
    after = stats_at(T0 + 2 * MINUTE)
    quiet = decider.decide(metrics_for(after, done.weights.weights), after, outcome.memory)
    assert quiet.kind == "unchanged"


def test_within_the_cool_down_a_worse_sharpe_does_not_trigger_again() -> None:
    decider = Decider(make_settings())
    done = first_rebalance(decider)
    assert done.weights is not None
    # Sharpe of all-in-AAA falls to ~0.3: outside the band (re-arms) but cooling down.
    worse = stats_at(T0 + MINUTE // 2, mean=[0.0002, 0.0001])
    outcome = decider.decide(metrics_for(worse, done.weights.weights), worse, done.memory)
    assert outcome.kind == "rearm"
    assert outcome.event is not None and outcome.event.decision == "rearm"
    assert outcome.weights is None and outcome.notification is None
    assert outcome.memory.policy.armed
    # After the cool-down it may act again.
    after = stats_at(T0 + 2 * MINUTE, mean=[0.0002, 0.0004])
    again = decider.decide(metrics_for(after, done.weights.weights), after, outcome.memory)
    assert again.kind == "rebalance"


def test_metrics_not_newer_than_the_last_decision_are_not_decided_again() -> None:
    decider = Decider(make_settings())
    done = first_rebalance(decider)
    stats = stats_at(T0)
    replay = decider.decide(metrics_for(stats, MOSTLY_SECOND), stats, done.memory)
    assert replay.kind == "already_decided" and replay.event is None


# ------------------------------------------------------------------------------------- holds


def test_below_threshold_with_nothing_feasible_publishes_a_hold_and_tells_the_owner() -> None:
    # A 1 % turnover cap cannot gain 0.05 of Sharpe: the attempt holds.
    decider = Decider(make_settings(max_turnover=0.01))
    stats = stats_at(T0)
    outcome = decider.decide(metrics_for(stats, MOSTLY_SECOND), stats, PortfolioMemory())
    assert outcome.kind == "hold" and outcome.weights is None
    event = outcome.event
    assert event is not None and event.decision == "hold"
    assert event.new_weights == event.old_weights == MOSTLY_SECOND
    assert event.sharpe_before == event.sharpe_after < 1.0
    assert event.turnover == 0.0 and "below the minimum" in event.reason
    assert outcome.notification is not None and outcome.notification.kind == "hold"
    assert "below its threshold 1.00" in outcome.notification.body

    # Re-examined after the cool-down, still stuck: another hold event, but no second message.
    later = stats_at(T0 + 2 * MINUTE)
    again = decider.decide(metrics_for(later, MOSTLY_SECOND), later, outcome.memory)
    assert again.kind == "hold" and again.event is not None
    assert again.notification is None


def test_warming_up_and_above_threshold_publish_nothing() -> None:
    decider = Decider(make_settings())
    young = stats_at(T0, count=5)
    assert decider.decide(metrics_for(young, MOSTLY_SECOND), young, PortfolioMemory()).kind == (
        "unchanged"
    )
    good = stats_at(T0)
    fine = decider.decide(metrics_for(good, {"AAA": 1.0, "BBB": 0.0}), good, PortfolioMemory())
    assert fine.kind == "unchanged" and fine.event is None


# ------------------------------------------------------------------------------------ validation


def _metrics_value(**changes: Any) -> bytes:
    record = metrics_for(stats_at(T0), MOSTLY_SECOND).to_record()
    record.update(changes)
    return codec_for("PortfolioMetrics").encode(record)


def _stats_value(stats: PortfolioStats) -> bytes:
    return codec_for("PortfolioStats").encode(stats.to_record())


@pytest.mark.parametrize(
    ("changes", "key", "reason", "words"),
    [
        ({"portfolioId": "nope"}, b"nope", "unknown_portfolio", "not configured"),
        ({"weights": {"AAA": 1.0}}, b"p", "invalid_metrics", "missing BBB"),
        ({"weights": {"AAA": 0.7, "BBB": 0.7}}, b"p", "invalid_metrics", "sum to 1.4"),
        ({"statsTimestamp": 0}, b"p", "invalid_metrics", "statsTimestamp"),
        ({"sharpRatio": float("nan")}, b"p", "invalid_metrics", "not finite"),
        ({}, b"other", "key_mismatch", "is not the portfolio id"),
        ({}, None, "key_mismatch", "is not the portfolio id"),
    ],
)
def test_metrics_that_do_not_fit_are_rejected_with_a_reason(
    changes: dict[str, Any], key: bytes | None, reason: str, words: str
) -> None:
    with pytest.raises(Rejected) as caught:
        Decider(make_settings()).metrics_from(_metrics_value(**changes), key)
    assert caught.value.reason == reason and words in caught.value.detail


def test_statistics_are_put_in_ticker_order_and_checked() -> None:
    decider = Decider(make_settings())
    swapped = PortfolioStats.from_arrays(
        "p", T0, ["BBB", "AAA"], [2e-4, 1e-3], [[4e-4, 1e-5], [1e-5, 1e-4]], count=50
    )
    aligned = decider.stats_from(_stats_value(swapped), b"p")
    assert aligned.tickers == TICKERS and aligned.mean == (1e-3, 2e-4)
    assert aligned.covariance == ((1e-4, 1e-5), (1e-5, 4e-4))

    other = PortfolioStats.from_arrays("p", T0, ["AAA", "CCC"], [0.0, 0.0], np.eye(2))
    with pytest.raises(Rejected, match="tickers \\['AAA', 'CCC'\\] are not the portfolio's"):
        decider.stats_from(_stats_value(other), b"p")
    wrong_bar = replace(stats_at(T0), bar_seconds=300)  # the portfolio has 60 s bars
    with pytest.raises(Rejected, match="300 s bars") as caught:
        decider.stats_from(_stats_value(wrong_bar), b"p")
    assert caught.value.reason == "invalid_stats"
    with pytest.raises(Rejected) as caught:
        decider.stats_from(_stats_value(replace(stats_at(T0), portfolio_id="nope")), b"nope")
    assert caught.value.reason == "unknown_portfolio"


# ---------------------------------------------------------------------------------- the memory


def _replayed(records: list[tuple[str, Any]]) -> Memory:
    """A fresh memory fed the records the decisions published, as read back from the topics."""
    memory = Memory({"p": TICKERS})
    for kind, record in records:
        if kind == "weights":
            memory.on_weights(Weights.from_record(record))
        else:
            memory.on_event(RebalanceEvent.from_record(record))
    return memory


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.floats(-0.001, 0.002),  # mean of AAA per bar
            st.floats(-0.001, 0.002),  # mean of BBB per bar
            st.integers(1, 5),  # minutes to the next bar
            st.booleans(),  # the job has applied the latest weights
        ),
        min_size=1,
        max_size=25,
    )
)
def test_the_memory_rebuilt_from_published_records_decides_the_same(
    steps: list[tuple[float, float, int, bool]],
) -> None:
    """After any sequence of metrics, a memory rebuilt from what was published equals the one
    the decisions carried forward, so a restarted instance would decide the same."""
    decider = Decider(make_settings(cooldown_seconds=120))
    memory = PortfolioMemory(weights=MOSTLY_SECOND, weights_source="config")
    published: list[tuple[str, Any]] = [("weights", Weights("p", 1, MOSTLY_SECOND).to_record())]
    applied: Mapping[str, float] = MOSTLY_SECOND
    ts = T0
    for mean_a, mean_b, minutes, caught_up in steps:
        ts += minutes * MINUTE
        stats = stats_at(ts, mean=[mean_a, mean_b])
        if caught_up and memory.weights is not None:
            applied = memory.weights
        outcome = decider.decide(metrics_for(stats, applied), stats, memory)
        if outcome.weights is not None:
            published.append(("weights", outcome.weights.to_record()))
        if outcome.event is not None:
            published.append(("event", outcome.event.to_record()))
            assert state_after(outcome.event, memory.policy) == outcome.memory.policy
        memory = outcome.memory
        rebuilt = _replayed(published).committed("p")
        assert rebuilt.policy == memory.policy
        assert rebuilt.last_event_ms == memory.last_event_ms
        assert rebuilt.weights == memory.weights
        assert rebuilt.last_decision == memory.last_decision


def test_weights_published_before_our_own_unread_ones_do_not_replace_them() -> None:
    memory = Memory({"p": TICKERS})
    memory.on_weights(Weights("p", 1, {"AAA": 0.5, "BBB": 0.5}, source="config"))
    ours = first_rebalance(Decider(make_settings()))
    assert ours.weights is not None
    memory.stage("p", ours.memory)
    memory.commit()
    # A manual change committed before ours is read back: it precedes ours in the log.
    manual = Weights("p", T0 + 1, {"AAA": 0.1, "BBB": 0.9}, source="manual")
    assert not memory.on_weights(manual)
    assert memory.committed("p").weights == ours.weights.weights
    assert memory.on_weights(ours.weights)  # ours, read back
    assert memory.committed("p").weights_read_back
    assert memory.on_weights(manual), "a later manual change replaces ours"
    assert memory.committed("p").weights == manual.weights


def test_invalid_or_foreign_weights_are_not_remembered() -> None:
    memory = Memory({"p": TICKERS})
    reader = MemoryReader(memory, Intake.from_settings(make_settings()))

    def read(weights: Weights) -> bool:
        value = codec_for("Weights").encode(weights.to_record())
        return reader.read("weights", value, weights.portfolio_id.encode())

    assert not read(Weights("p", 1, {"AAA": 0.7, "BBB": 0.7}))
    assert not read(Weights("q", 1, {"AAA": 1.0}))
    assert memory.committed("p").weights is None
    assert reader.skipped == {"invalid_weights": 1, "unknown_portfolio": 1}


def test_weights_older_than_those_held_are_stale() -> None:
    memory = Memory({"p": TICKERS})
    assert memory.on_weights(Weights("p", T0, {"AAA": 0.5, "BBB": 0.5}))
    assert not memory.on_weights(Weights("p", T0 - 1, {"AAA": 0.1, "BBB": 0.9}))
    assert memory.committed("p").weights == {"AAA": 0.5, "BBB": 0.5}
    assert memory.on_weights(Weights("p", T0, {"AAA": 0.4, "BBB": 0.6})), "equal stamps apply"


def test_metrics_older_than_the_weights_in_force_are_stale() -> None:
    decider = Decider(make_settings())
    memory = PortfolioMemory(weights=MOSTLY_SECOND, weights_timestamp=T0 + MINUTE)
    stats = stats_at(T0)
    outcome = decider.decide(metrics_for(stats, MOSTLY_SECOND), stats, memory)
    assert outcome.kind == "stale" and outcome.event is None and outcome.memory == memory


def test_events_apply_once_and_in_order() -> None:
    memory = Memory({"p": TICKERS})
    first = first_rebalance(Decider(make_settings()))
    assert first.event is not None
    assert memory.on_event(first.event)
    assert not memory.on_event(first.event), "read twice, applied once"
    older = replace(first.event, timestamp=T0 - 1, event_id="")
    assert not memory.on_event(older)
    assert memory.committed("p").policy == PolicyState(
        armed=False, last_attempt_ms=T0, last_decision_sharpe=first.event.sharpe_after
    )


def test_staged_memory_is_forgotten_when_the_transaction_aborts() -> None:
    memory = Memory({"p": TICKERS})
    first = first_rebalance(Decider(make_settings()))
    memory.stage("p", first.memory)
    assert memory.view("p") == first.memory and memory.committed("p") == PortfolioMemory()
    memory.rollback()
    assert memory.view("p") == PortfolioMemory()


def test_seeds_are_remembered_in_ticker_order() -> None:
    memory = Memory({"p": TICKERS})
    seed = PortfolioStats.from_arrays("p", 5, ["BBB", "AAA"], [2.0, 1.0], [[4.0, 0.0], [0.0, 1.0]])
    assert memory.on_initial_stats(seed)
    found = memory.initial_stats("p", 5)
    assert found is not None and found.tickers == TICKERS and found.mean == (1.0, 2.0)
    assert memory.initial_stats("p", 6) is None
