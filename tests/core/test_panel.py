"""MonitorPanel: many portfolios in one numpy step give the bits of one monitor each."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.moments import WelfordMoments, stats_record
from streamfolio.core.panel import MonitorPanel, panel_key
from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.returns import BarReturns, bar_end_ms

UNIVERSE = [f"T{i}" for i in range(8)]
BAR_MS = 60_000


def _monitor(
    rng: np.random.Generator, pid: str, d: int, kind: str, *, warm: bool = True
) -> PortfolioMonitor:
    tickers = tuple(sorted(rng.choice(UNIVERSE, size=d, replace=False).tolist()))
    spec = PortfolioSpec(
        pid,
        tickers,
        BAR_MS,
        float(rng.choice([252.0, 98_280.0])),
        risk_free_rate=float(rng.choice([0.0, 0.03])),
        estimator=kind,  # type: ignore[arg-type]
        half_life_bars=float(rng.integers(2, 50)) if kind == "ewm" else None,
        sharpe_threshold=0.5,
    )
    monitor = PortfolioMonitor(spec)
    a = rng.normal(size=(d, d)) * 1e-2
    prior = WelfordMoments.from_prior(rng.normal(0, 1e-3, d), a @ a.T + np.eye(d) * 1e-6, 30)
    assert monitor.seed(stats_record(prior, pid, tickers, 1)) is None
    weights = rng.dirichlet(np.ones(d))
    weights /= weights.sum()
    monitor.set_weights(dict(zip(tickers, weights.tolist(), strict=True)), 1)
    if warm:
        monitor.take_bar(BarReturns(0, dict.fromkeys(tickers, 1.0), {}))
    return monitor


def _stats(monitor: PortfolioMonitor) -> tuple[Any, ...]:
    m = monitor.moments
    return m.n, m.mean.tobytes(), m.covariance.tobytes(), monitor.stats_timestamp_ms


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 5),
    kind=st.sampled_from(["welford", "ewm"]),
    portfolios=st.integers(1, 12),
    bars=st.integers(1, 30),
)
def test_a_panel_gives_the_bits_of_one_monitor_per_portfolio(
    seed: int, d: int, kind: str, portfolios: int, bars: int
) -> None:
    rng = np.random.default_rng(seed)
    # Some start cold: they warm up in the panel, as the bars' closes come.
    monitors = {
        f"p{i}": _monitor(rng, f"p{i}", d, kind, warm=bool(rng.random() < 0.7))
        for i in range(portfolios)
    }
    panel = MonitorPanel(d, kind)  # type: ignore[arg-type]
    for monitor in monitors.values():
        panel.put(PortfolioMonitor.from_state(monitor.spec, monitor.to_state()))
    for k in range(1, bars + 1):
        traded = [t for t in UNIVERSE if rng.random() < 0.6]
        returns = {t: float(rng.normal(0, 0.02)) for t in traded}
        if rng.random() < 0.2:  # a portfolio taken out, changed through its monitor, put back
            pid = str(rng.choice(sorted(monitors)))
            out = panel.monitor(pid)
            weights = rng.dirichlet(np.ones(d))
            new = dict(zip(out.spec.tickers, (weights / weights.sum()).tolist(), strict=True))
            assert out.set_weights(new, k) == monitors[pid].set_weights(new, k)
            panel.remove(pid)
            panel.put(out)
        ids = sorted(monitors)
        updated = panel.take_bar(ids, traded, returns, bar_end_ms(k, BAR_MS))
        expected = [
            pid
            for pid in ids
            if monitors[pid].take_bar(BarReturns(k, dict.fromkeys(traded, 1.0), returns))
        ]
        assert updated == expected
        n, mean, covariance, stamp = panel.statistics(ids)
        for i, pid in enumerate(ids):
            assert (int(n[i]), mean[i].tobytes(), covariance[i].tobytes(), int(stamp[i])) == (
                _stats(monitors[pid])
            )
        got = dict(panel.metrics(ids))
        want = {pid: r for pid in ids if (r := monitors[pid].metrics()) is not None}
        assert got == want
    for pid in monitors:
        assert panel.monitor(pid).to_state() == monitors[pid].to_state()


def test_rows_are_reused_and_survive_a_round_trip_through_arrays() -> None:
    rng = np.random.default_rng(3)
    monitors = [_monitor(rng, f"p{i}", 3, "welford") for i in range(40)]
    panel = MonitorPanel(3, "welford")
    for monitor in monitors:
        panel.put(monitor)
    for monitor in monitors[:30]:
        panel.remove(monitor.spec.portfolio_id)
    for monitor in monitors[:30]:
        panel.put(monitor)
    ids, arrays = panel.to_arrays()
    again = MonitorPanel.from_arrays(3, "welford", [panel.spec(p) for p in ids], arrays)
    assert sorted(again.portfolio_ids) == sorted(m.spec.portfolio_id for m in monitors)
    for monitor in monitors:
        pid = monitor.spec.portfolio_id
        assert again.monitor(pid).to_state() == monitor.to_state()


def test_a_monitor_that_does_not_fit_is_refused() -> None:
    rng = np.random.default_rng(4)
    monitor = _monitor(rng, "p", 3, "welford")
    assert panel_key(monitor.spec) == (3, "welford")
    with pytest.raises(ValueError, match="does not fit"):
        MonitorPanel(2, "welford").put(monitor)
    with pytest.raises(ValueError, match="does not fit"):
        MonitorPanel(3, "ewm").put(monitor)


def test_a_cold_portfolio_warms_up_in_the_panel() -> None:
    rng = np.random.default_rng(5)
    cold = _monitor(rng, "p", 3, "welford", warm=False)
    a, b, c = cold.spec.tickers
    panel = MonitorPanel(3, "welford")
    panel.put(cold)
    assert panel.monitor("p").returns.waiting_for == (a, b, c)
    assert panel.take_bar(["p"], [a, b], {a: 0.01}, 60_000) == []  # warming up: no vector
    assert panel.monitor("p").returns.waiting_for == (c,)
    assert panel.take_bar(["p"], [c], {c: 0.02}, 120_000) == []  # the last first close
    assert panel.take_bar(["p"], [a], {a: 0.03}, 180_000) == ["p"]
