"""The dashboard's in-memory state: records folded into snapshots, deltas, bounds and health."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from streamfolio.config import example_config_path, load_config
from streamfolio.dashboard.bounds import Limits
from streamfolio.dashboard.state import DashboardState
from streamfolio.dashboard.view import PortfolioInfo, correlation, sharpe_status
from streamfolio.errors import UsageError

T0 = 1_790_000_000_000  # epoch ms


class Clock:
    def __init__(self, now: float = T0 / 1000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def metrics(pid: str, t: int, sharpe: float, **extra: Any) -> dict[str, Any]:
    return {
        "portfolioId": pid,
        "risk": 0.2,
        "expectedReturn": 0.05 + sharpe * 0.2,
        "sharpRatio": sharpe,
        "timestamp": t,
        "count": 10,
        **extra,
    }


def stats(pid: str, t: int, cov: np.ndarray[Any, Any], kind: str = "updated") -> dict[str, Any]:
    tickers = [f"T{i}" for i in range(len(cov))]
    return {
        "timestamp": t,
        "portfolio_id": pid,
        "meanReturns": dict.fromkeys(tickers, 0.001),
        "covarianceMatrix": {
            a: {b: float(cov[i, j]) for j, b in enumerate(tickers)} for i, a in enumerate(tickers)
        },
        "tickers": tickers,
        "count": 100,
        "kind": kind,
    }


def event(pid: str, t: int, decision: str = "rebalance") -> dict[str, Any]:
    return {
        "portfolio_id": pid,
        "timestamp": t,
        "reason": "Sharpe below threshold",
        "decision": decision,
        "old_weights": {"A": 0.5, "B": 0.5},
        "new_weights": {"A": 0.7, "B": 0.3},
        "sharpe_before": 0.2,
        "sharpe_after": 0.6,
        "expected_return_after": 0.1,
        "risk_after": 0.15,
        "turnover": 0.4,
        "optimizer_status": "optimal",
        "event_id": f"{pid}@{t}",
    }


def dead(reason: str) -> dict[str, Any]:
    return {
        "reason": reason,
        "detail": f"{reason} tick",
        "source_topic": "prices",
        "payload": b"\x00",
        "timestamp": T0,
        "component": "job",
    }


@pytest.fixture
def state() -> DashboardState:
    infos = [PortfolioInfo("p1", ("A", "B"), "ann", 0.5, 0.05), PortfolioInfo("p2", ("C",))]
    return DashboardState(infos, limits=Limits(metrics=5, weights=3, events=2), clock=Clock())


# ------------------------------------------------------------------------------ correlation


def test_correlation_matches_numpy_corrcoef() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4))
    cov = np.cov(x, rowvar=False)
    got = np.array(correlation(cov), dtype=float)
    np.testing.assert_allclose(got, np.corrcoef(x, rowvar=False), atol=1e-12)
    assert all(got[i, i] == 1.0 for i in range(4))


def test_correlation_of_a_constant_asset_is_unknown_not_nan() -> None:
    cov = np.array([[0.04, 0.0, 0.01], [0.0, 0.0, 0.0], [0.01, 0.0, 0.09]])
    got = correlation(cov)
    assert got[1] == [None, None, None] and [row[1] for row in got] == [None, None, None]
    assert got[0][2] == pytest.approx(0.01 / (0.2 * 0.3))


def test_snapshot_carries_the_correlation_of_the_latest_updated_statistics(
    state: DashboardState,
) -> None:
    prior = np.array([[1.0, 0.0], [0.0, 1.0]])
    updated = np.array([[4.0, 3.0], [3.0, 9.0]])
    assert state.apply("initial_stats", stats("p1", T0, prior, "initial"))
    assert state.apply("updated_stats", stats("p1", T0 + 60_000, updated))
    assert state.apply("initial_stats", stats("p1", T0 + 120_000, prior, "initial"))  # ignored
    corr = state.snapshot("p1")["correlation"]  # type: ignore[index]
    assert corr["kind"] == "updated" and corr["tickers"] == ["T0", "T1"]
    assert corr["matrix"][0][1] == pytest.approx(0.5)
    assert corr["timestamp"] == T0 + 60_000 and corr["count"] == 100


# ------------------------------------------------------------------------------ folding


def test_metrics_fold_into_columns_and_a_summary_with_the_configured_band(
    state: DashboardState,
) -> None:
    for i, s in enumerate([0.7, 0.52, 0.4]):
        assert state.apply("metrics", metrics("p1", T0 + i * 60_000, s))
    snap = state.snapshot("p1")
    assert snap is not None
    assert snap["metrics"]["t"] == [T0, T0 + 60_000, T0 + 120_000]
    assert snap["metrics"]["sharpe"] == [0.7, 0.52, 0.4]
    summary = snap["summary"]
    assert (summary["threshold"], summary["band"], summary["sharpe"]) == (0.5, 0.05, 0.4)
    assert summary["status"] == "below" and summary["points"] == 3
    assert summary["tickers"] == ["A", "B"] and summary["owner"] == "ann"


def test_sharpe_status_edges() -> None:
    assert sharpe_status(0.45, 0.5, 0.05) == "band"  # the band's edges belong to it
    assert sharpe_status(0.55, 0.5, 0.05) == "band"
    assert sharpe_status(0.551, 0.5, 0.05) == "above"
    assert sharpe_status(0.2, None, None) == "above"


def test_portfolios_not_configured_are_ignored_and_counted(state: DashboardState) -> None:
    assert not state.apply("metrics", metrics("zz", T0, 0.1, sharpeThreshold=0.3))
    assert not state.apply(
        "weights", {"timestamp": T0, "portfolio_id": "zz", "weights": {"A": 1.0}}
    )
    assert [s["id"] for s in state.summaries()] == ["p1", "p2"]  # configured, in their order
    assert state.snapshot("zz") is None
    report = state.health_report()
    assert report["ignored"] == {"unknown_portfolio": 2} and report["portfolios"] == 2
    assert report["read"] == {"metrics": 1, "weights": 1} and report["invalid"] == {}


def test_the_records_threshold_stands_in_for_a_portfolio_configured_without_one(
    state: DashboardState,
) -> None:
    state.apply("metrics", metrics("p2", T0, 0.1, sharpeThreshold=0.3))
    p2 = state.summaries("p2")[0]
    assert p2["threshold"] == 0.3 and p2["band"] is None and p2["status"] == "below"


def test_from_settings_takes_thresholds_and_bands_from_each_portfolios_policy() -> None:
    settings = load_config(example_config_path(), environ={})
    lines = {s["id"]: s for s in DashboardState.from_settings(settings).summaries()}
    banks = settings.portfolio("banks")
    assert lines["banks"]["threshold"] == banks.policy.sharpe_threshold == 0.3
    assert lines["banks"]["band"] == banks.policy.band
    assert lines["portf1"]["tickers"] == list(settings.portfolio("portf1").tickers)


def test_invalid_and_undecodable_records_are_counted_not_folded(state: DashboardState) -> None:
    assert not state.apply("metrics", metrics("p1", T0, math.nan))
    assert not state.apply("weights", {"portfolio_id": "p1"})  # fields missing
    state.refused("metrics", "undecodable")
    report = state.health_report()
    assert report["invalid"] == {"metrics": 1, "weights": 1}
    assert report["undecodable"] == {"metrics": 1}
    assert report["ignored"] == {"undecodable": 1}
    assert state.snapshot("p1")["metrics"]["t"] == []  # type: ignore[index]


def test_intake_refusals_are_counted_by_their_reason_and_change_nothing(
    state: DashboardState,
) -> None:
    assert state.apply("metrics", metrics("p1", T0, 0.4))
    before, cursor = state.snapshot("p1"), state.seq
    for role, reason in [
        ("metrics", "key_mismatch"),
        ("metrics", "future"),
        ("weights", "invalid_weights"),
        ("weights", "unknown_portfolio"),
        ("updated_stats", "invalid_stats"),
        ("dead_letter", "undecodable"),
        ("metrics", "not a reason of the intake"),
    ]:
        state.refused(role, reason)  # type: ignore[arg-type]
    assert state.snapshot("p1") == before and state.seq == cursor
    report = state.health_report()
    assert report["ignored"] == {
        "key_mismatch": 1,
        "future": 1,
        "invalid_weights": 1,
        "unknown_portfolio": 1,
        "invalid_stats": 1,
        "undecodable": 1,
        "other": 1,
    }
    assert report["read"] == {"metrics": 4, "weights": 2, "updated_stats": 1, "dead_letter": 1}
    assert report["invalid"] == {"weights": 1, "updated_stats": 1}
    assert report["undecodable"] == {"dead_letter": 1}
    assert report["dead_letter_total"] == 0
    with pytest.raises(ValueError, match="unknown role"):
        state.refused("prices", "undecodable")  # type: ignore[arg-type]


def test_events_are_shown_once_even_when_a_replay_publishes_them_again(
    state: DashboardState,
) -> None:
    state.apply("rebalance_events", event("p1", T0))
    state.apply("rebalance_events", event("p1", T0))
    state.apply("rebalance_events", event("p1", T0 + 1, "hold"))
    events = state.snapshot("p1")["events"]  # type: ignore[index]
    assert [(e["t"], e["decision"]) for e in events] == [(T0, "rebalance"), (T0 + 1, "hold")]
    assert events[0]["sharpe_before"] == 0.2 and events[0]["turnover"] == 0.4


# ------------------------------------------------------------------------------ bounds and deltas


def test_histories_are_bounded(state: DashboardState) -> None:
    for i in range(12):
        state.apply("metrics", metrics("p1", T0 + i, 0.1 * i))
        state.apply("weights", {"timestamp": T0 + i, "portfolio_id": "p1", "weights": {"A": 1.0}})
        state.apply("rebalance_events", event("p1", T0 + i))
    snap = state.snapshot("p1")
    assert snap is not None
    assert snap["metrics"]["t"] == [T0 + i for i in range(7, 12)]
    assert [w["t"] for w in snap["weights"]] == [T0 + 9, T0 + 10, T0 + 11]
    assert [e["t"] for e in snap["events"]] == [T0 + 10, T0 + 11]
    assert snap["limits"] == {"metrics": 5, "weights": 3, "events": 2}


def test_delta_holds_only_what_changed_since_the_cursor(state: DashboardState) -> None:
    state.apply("metrics", metrics("p1", T0, 0.1))
    snap = state.snapshot("p1")
    assert snap is not None
    cursor = snap["seq"]
    assert state.delta("p1", cursor) is None
    state.apply("metrics", metrics("p2", T0, 0.3))  # another portfolio: nothing for p1
    assert state.delta("p1", cursor) is None
    state.apply("metrics", metrics("p1", T0 + 1, 0.2))
    delta = state.delta("p1", cursor)
    assert delta is not None and not delta["reset"]
    assert delta["metrics"]["t"] == [T0 + 1] and delta["correlation"] is None
    assert delta["weights"] == [] and delta["events"] == []
    assert state.delta("p1", delta["seq"]) is None
    state.apply("updated_stats", stats("p1", T0, np.eye(2)))
    delta = state.delta("p1", delta["seq"])
    assert delta is not None and delta["correlation"] is not None and delta["metrics"]["t"] == []


def test_a_client_following_deltas_matches_the_bounded_snapshot(state: DashboardState) -> None:
    # However many records arrive between two reads, trimming to the limits as the page does
    # gives what the server keeps: dropping old points never needs a resend.
    client = state.snapshot("p1")
    assert client is not None
    rng = np.random.default_rng(1)
    t = T0
    for _ in range(40):
        for _ in range(int(rng.integers(0, 9))):
            t += 1000
            assert state.apply("metrics", metrics("p1", t, float(rng.normal())), now=t / 1000)
        delta = state.delta("p1", client["seq"])
        if delta is None:
            continue
        assert not delta["reset"]
        for key, values in delta["metrics"].items():
            client["metrics"][key] = (client["metrics"][key] + values)[-5:]
        client["seq"] = delta["seq"]
    assert client["metrics"] == state.snapshot("p1")["metrics"]  # type: ignore[index]


def test_a_rewind_in_event_time_neither_wipes_nor_rewrites_history(
    state: DashboardState,
) -> None:
    # The job reprocessed from t=1000 (or a producer misstamped): what is shown stays, and the
    # histories only grow at their end, so a client's deltas never need a reset.
    for i in range(4):
        state.apply("metrics", metrics("p1", T0 + i * 1000, 0.1))
        state.apply(
            "weights", {"timestamp": T0 + i * 1000, "portfolio_id": "p1", "weights": {"A": 0.5}}
        )
    state.apply("weights", {"timestamp": T0 + 3000, "portfolio_id": "p1", "weights": {"A": 1.0}})
    before = state.snapshot("p1")
    cursor = state.seq
    assert not state.apply("metrics", metrics("p1", T0 + 1000, 0.9))
    assert not state.apply("metrics", metrics("p1", T0 + 3000, 0.9))  # not newer: ignored too
    assert not state.apply(
        "weights", {"timestamp": T0 + 2999, "portfolio_id": "p1", "weights": {"B": 1.0}}
    )
    assert state.delta("p1", cursor) is None and state.seq == cursor
    assert state.snapshot("p1") == before
    assert state.health_report()["ignored"] == {"out_of_order": 3}
    assert state.apply("metrics", metrics("p1", T0 + 4000, 0.2))  # the next one appends
    delta = state.delta("p1", cursor)
    assert delta is not None and not delta["reset"] and delta["metrics"]["t"] == [T0 + 4000]


def test_a_cursor_from_the_future_gets_a_reset(state: DashboardState) -> None:
    state.apply("metrics", metrics("p1", T0, 0.1))
    delta = state.delta("p1", state.seq + 100)  # e.g. a browser that followed an older server
    assert delta is not None and delta["reset"] and delta["metrics"]["t"] == [T0]
    assert state.delta("nope", 0) is None and state.snapshot("nope") is None


# ------------------------------------------------------------------------------ selection


def test_summaries_filter_hundreds_of_portfolios_by_id_owner_or_ticker() -> None:
    infos = [
        PortfolioInfo(f"client-{i:03d}", ("ATW", "IAM") if i % 2 else ("BCP",), f"desk{i % 3}")
        for i in range(300)
    ]
    state = DashboardState(infos)
    assert len(state.summaries()) == 300
    assert [s["id"] for s in state.summaries("CLIENT-01")] == [
        f"client-{i:03d}" for i in range(10, 20)
    ]
    assert len(state.summaries("bcp")) == 150
    assert len(state.summaries("desk1")) == 100
    assert len(state.summaries("iam", limit=7)) == 7
    assert state.summaries("no such thing") == []


# ------------------------------------------------------------------------------ health


def test_health_counts_dead_letters_by_reason_and_keeps_the_latest() -> None:
    state = DashboardState([], clock=Clock())
    for reason in ["late", "late", "undecodable", "late"]:
        assert state.apply("dead_letter", dead(reason))
    report = state.health_report()
    assert report["dead_letters"] == {"late": 3, "undecodable": 1}
    assert list(report["dead_letters"]) == ["late", "undecodable"]  # most frequent first
    assert report["dead_letter_total"] == 4
    assert [d["reason"] for d in report["recent_dead_letters"]] == [
        "late",
        "undecodable",
        "late",
        "late",
    ]


def test_health_lag_is_wall_clock_minus_the_newest_metrics_event_time() -> None:
    clock = Clock()
    state = DashboardState([PortfolioInfo("p"), PortfolioInfo("q")], clock=clock)
    assert state.health_report()["lag_ms"] is None
    state.apply("metrics", metrics("p", T0 - 5000, 0.1))
    state.apply("metrics", metrics("q", T0 - 9000, 0.1))  # older: does not move it back
    clock.now += 2.5
    report = state.health_report()
    assert report["last_event_time"] == T0 - 5000
    assert report["lag_ms"] == 7500
    assert report["idle_s"] == pytest.approx(2.5)


def test_health_rates_come_from_end_offsets_over_a_sliding_window() -> None:
    clock = Clock(0.0)
    state = DashboardState([], clock=clock)
    state.observe_end_offsets({"prices": 1000})
    assert "prices" not in state.health_report()["rates"]  # one sample is no rate
    for step in range(1, 11):
        clock.now = 2.0 * step
        # 100 ticks/s for the first 10 s, then 10 ticks/s.
        total = 1000 + (200 * step if step <= 5 else 1000 + 20 * (step - 5))
        state.observe_end_offsets({"prices": total})
    rates = state.health_report()["rates"]
    assert rates["prices"] == pytest.approx(10.0)  # the window has forgotten the fast part
    assert rates["read"] == 0.0


def test_status_and_error_are_reported() -> None:
    state = DashboardState([])
    assert state.health_report()["status"] == "starting"
    state.set_status("waiting", error="topics not created yet: x")
    report = state.health_report()
    assert (report["status"], report["error"]) == ("waiting", "topics not created yet: x")


def test_limits_must_be_positive() -> None:
    with pytest.raises(UsageError, match=r"Limits.metrics must be >= 1, got 0"):
        Limits(metrics=0)
