"""No look-ahead: changing any price after bar k changes nothing up to bar k.

The backtest runs on the bundled CSE history (the ``banks`` portfolio, whose policy trades often
on daily bars, so the policy's decisions are exercised). Prices after a bar k are scrambled and
written to a new file; every strategy's value and the policy's decisions up to bar k must stay
the same, and the initial state, estimated before the start, must not move at all.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamfolio.backtest.data import read_ticks, ticks_from_start, write_rows
from streamfolio.backtest.run import BacktestOptions, compare_portfolio, prepare_backtest
from streamfolio.backtest.strategies import run_policy
from streamfolio.config import example_config_path, load_config
from streamfolio.feeds.history import bundled_history_path
from streamfolio.portfolios import policy_settings, portfolio_spec
from streamfolio.replay import Tick

OPTIONS = BacktestOptions(start=dt.date(2025, 3, 3), portfolio_ids=("banks",))
DAY_MS = 86_400_000


def _run(prices: Path) -> dict[str, Any]:
    settings = load_config(example_config_path())
    prepared = prepare_backtest(settings, prices=prices, index=None, options=OPTIONS)
    result = compare_portfolio(prepared, "banks", OPTIONS)
    portfolio = prepared.portfolio("banks")
    entry = prepared.entry("banks")
    feed = ticks_from_start(prepared.ticks, prepared.start_ms, set(portfolio.tickers))
    policy = run_policy(
        portfolio_spec(portfolio, settings.exchange),
        policy_settings(portfolio, settings.exchange),
        entry["stats"],
        entry["weights"]["weights"],
        feed,
    )
    return {"state": entry, "result": result, "targets": policy.targets}


def _scrambled(ticks: list[Tick], after_ms: int, seed: int) -> list[Tick]:
    rng = np.random.default_rng(seed)
    return [
        Tick(t.event_time_ms, t.ticker, t.price * float(rng.uniform(0.5, 1.5)))
        if t.event_time_ms >= after_ms
        else t
        for t in ticks
    ]


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    return _run(bundled_history_path())


@pytest.mark.parametrize("cut", [dt.date(2025, 3, 3), dt.date(2025, 9, 15)])
def test_prices_after_bar_k_change_nothing_up_to_bar_k(
    baseline: dict[str, Any], cut: dt.date, tmp_path: Path
) -> None:
    ticks = read_ticks(bundled_history_path())
    after_ms = int(dt.datetime.combine(cut, dt.time(0, 0), tzinfo=dt.UTC).timestamp() * 1000)
    changed = tmp_path / "scrambled.csv"
    write_rows(_scrambled(ticks, after_ms, seed=cut.toordinal()), changed)
    run = _run(changed)

    # The initial state comes from before the start only: identical.
    assert run["state"] == baseline["state"]
    old, new = baseline["result"], run["result"]
    k = int(np.searchsorted(old.strategies[0].times_ms, after_ms, side="right"))  # rows ≤ bar k
    assert k >= 1
    for before, after in zip(old.strategies, new.strategies, strict=True):
        assert before.key == after.key
        assert after.values[:k] == pytest.approx(before.values[:k], rel=0, abs=0), before.key
        # Not vacuous: the scrambled prices do change what follows.
        assert not np.allclose(after.values[k:], before.values[k:]), before.key
    last_bar = after_ms // DAY_MS - 1
    up_to_k = {b: w.tolist() for b, w in baseline["targets"].items() if b <= last_bar}
    assert up_to_k == {b: w.tolist() for b, w in run["targets"].items() if b <= last_bar}
    assert len(baseline["targets"]) > len(up_to_k) >= (cut > OPTIONS.start)  # some after, too
