"""The performance figures against hand-computed small cases (streamfolio.core.performance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamfolio.core.performance import (
    annualised_return,
    annualised_volatility,
    drawdown_series,
    max_drawdown,
    performance_figures,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
    total_return,
    total_turnover,
)

VALUES = [100.0, 110.0, 99.0, 118.8]
"""+10 %, −10 %, +20 %: by hand, returns 0.1, −0.1, 0.2."""


def test_returns_by_hand() -> None:
    assert simple_returns(VALUES) == pytest.approx([0.1, -0.1, 0.2])
    assert total_return(VALUES) == pytest.approx(0.188)
    # 3 bars at 12 a year: 1.188 ** 4 − 1
    assert annualised_return(VALUES, 12) == pytest.approx(1.188**4 - 1)


def test_volatility_sharpe_and_sortino_by_hand() -> None:
    r = [0.1, -0.1, 0.2]
    mean = 0.2 / 3
    std = math.sqrt(((0.1 - mean) ** 2 + (-0.1 - mean) ** 2 + (0.2 - mean) ** 2) / 2)
    assert annualised_volatility(r, 12) == pytest.approx(std * math.sqrt(12))
    assert sharpe_ratio(r, 12) == pytest.approx(mean / std * math.sqrt(12))
    # r_f = 12 % a year is 1 % a bar.
    assert sharpe_ratio(r, 12, 0.12) == pytest.approx((mean - 0.01) / std * math.sqrt(12))
    downside = math.sqrt((0.11**2) / 3)  # only −0.1 − 0.01 is below the risk-free return
    assert sortino_ratio(r, 12, 0.12) == pytest.approx((mean - 0.01) / downside * math.sqrt(12))


def test_drawdowns_by_hand() -> None:
    values = [100.0, 120.0, 90.0, 96.0, 130.0, 104.0]
    assert drawdown_series(values) == pytest.approx([0, 0, -0.25, -0.2, 0, -0.2])
    assert max_drawdown(values) == pytest.approx(-0.25)
    assert max_drawdown([1.0, 2.0, 3.0]) == 0.0


def test_turnover_by_hand() -> None:
    # [0.5, 0.5] → [0.8, 0.2] on 100 trades 60: one-way 0.3; then 10 on 50: 0.1.
    assert total_turnover([60.0, 10.0], [100.0, 50.0]) == pytest.approx(0.4)
    assert total_turnover([], []) == 0.0
    with pytest.raises(ValueError, match="one portfolio value per trade"):
        total_turnover([1.0], [1.0, 2.0])


def test_undefined_figures_are_nan_not_errors() -> None:
    flat = performance_figures([1.0, 1.0, 1.0], 246)
    assert flat.total_return == 0.0 and flat.max_drawdown == 0.0
    assert math.isnan(flat.sharpe) and math.isnan(flat.sortino)
    single = performance_figures([5.0], 246)
    assert single.bars == 0 and math.isnan(single.annualised_return)
    assert math.isnan(single.volatility)


def test_figures_agree_with_the_functions() -> None:
    rng = np.random.default_rng(3)
    values = 100 * np.cumprod(1 + rng.normal(0.0005, 0.01, 300))
    f = performance_figures(values, 246, 0.025)
    r = simple_returns(values)
    assert f.sharpe == pytest.approx(sharpe_ratio(r, 246, 0.025))
    assert f.max_drawdown == pytest.approx(max_drawdown(values))
    assert f.bars == 299
