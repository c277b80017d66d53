"""Benchmark: streamfolio's max-Sharpe + L2 solver against PyPortfolioOpt.

Both solve the same long-only problem (weights in [0, 1], ``γ = 0.1``, ``r_f = 0.02``) on one
seeded factor-model draw per size (portfolio.md §4). The PyPortfolioOpt time includes building the
``EfficientFrontier``, adding ``L2_reg`` and ``max_sharpe`` with its default solver, as a live
re-optimisation would. Run it with ``python bench/analytics_optimize.py`` (streamfolio importable).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypedDict

import numpy as np
from pypfopt import EfficientFrontier, objective_functions
from pypfopt.exceptions import OptimizationError as PyPortfolioOptError

from streamfolio.core.optimize import max_sharpe
from streamfolio.core.types import FloatArray

RISK_FREE_RATE = 0.02
GAMMA = 0.1
SEED = 20261124


class OptimizerTiming(TypedDict):
    n_assets: int
    streamfolio_ms: float
    pypfopt_ms: float
    ratio: float
    max_abs_weight_diff: float
    """NaN when PyPortfolioOpt's solver failed (its time is still the time it spent)."""
    clarabel_weight_diff: float
    """Against PyPortfolioOpt with ``solver="CLARABEL"``, which solves N = 500 where OSQP stops."""


def factor_model_problem(n_assets: int, seed: int = SEED) -> tuple[FloatArray, FloatArray]:
    """Annualised ``Σ = ββᵀ·0.18² + LLᵀ·0.08² + diag(idio²)``, ``μ = r_f + 0.06β + N(0, 0.03)``.

    The idiosyncratic volatilities are uniform on [0.10, 0.30]; there are three style factors.
    """
    rng = np.random.default_rng([seed, n_assets])
    beta = rng.normal(1.0, 0.3, n_assets)
    loadings = rng.normal(0.0, 1.0, (n_assets, 3))
    idiosyncratic = rng.uniform(0.10, 0.30, n_assets)
    cov = (
        np.outer(beta, beta) * 0.18**2 + loadings @ loadings.T * 0.08**2 + np.diag(idiosyncratic**2)
    )
    mu = RISK_FREE_RATE + 0.06 * beta + rng.normal(0.0, 0.03, n_assets)
    return mu, cov


def streamfolio_weights(mu: FloatArray, cov: FloatArray) -> FloatArray:
    weights = max_sharpe(mu, cov, RISK_FREE_RATE, GAMMA).weights
    if weights is None:
        raise RuntimeError("streamfolio found no weights on a feasible benchmark problem")
    return weights


def pypfopt_weights(
    mu: FloatArray, cov: FloatArray, solver: str | None = None
) -> FloatArray | None:
    """PyPortfolioOpt's weights, or ``None`` when its solver gives up (OSQP can hit its limit)."""
    with warnings.catch_warnings():
        # PyPortfolioOpt warns that extra objectives may misbehave under max_sharpe's change of
        # variable (L2_reg is exact there), and cvxpy warns before a solver failure we report.
        warnings.filterwarnings("ignore", message="max_sharpe transforms", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message="Solution may be inaccurate", category=UserWarning
        )
        frontier = EfficientFrontier(mu, cov, solver=solver)
        frontier.add_objective(objective_functions.L2_reg, gamma=GAMMA)
        try:
            frontier.max_sharpe(risk_free_rate=RISK_FREE_RATE)
        except PyPortfolioOptError:
            return None
    weights: FloatArray = frontier.weights
    return weights


def median_ms(solve: Callable[[], object], repeats: int) -> float:
    solve()  # the first call pays for imports and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        solve()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def bench_optimizer(sizes: Sequence[int] = (10, 50, 200, 500)) -> list[OptimizerTiming]:
    rows: list[OptimizerTiming] = []
    for n_assets in sizes:
        mu, cov = factor_model_problem(n_assets)
        ours = median_ms(partial(streamfolio_weights, mu, cov), _repeats(n_assets, fast=True))
        theirs = median_ms(partial(pypfopt_weights, mu, cov), _repeats(n_assets, fast=False))
        reference = pypfopt_weights(mu, cov)
        difference = math.nan
        if reference is not None:
            difference = float(np.max(np.abs(streamfolio_weights(mu, cov) - reference)))
        clarabel = pypfopt_weights(mu, cov, solver="CLARABEL")
        clarabel_difference = math.nan
        if clarabel is not None:
            clarabel_difference = float(np.max(np.abs(streamfolio_weights(mu, cov) - clarabel)))
        rows.append(
            OptimizerTiming(
                n_assets=n_assets,
                streamfolio_ms=ours,
                pypfopt_ms=theirs,
                ratio=theirs / ours,
                max_abs_weight_diff=difference,
                clarabel_weight_diff=clarabel_difference,
            )
        )
    return rows


def _repeats(n_assets: int, *, fast: bool) -> int:
    """Fewer repeats for larger problems, as in portfolio.md §4 (15/11/7/5 for PyPortfolioOpt)."""
    base = 15 if n_assets <= 10 else 11 if n_assets <= 50 else 7 if n_assets <= 200 else 5
    return 4 * base if fast else base


def main() -> None:
    print(f"max-Sharpe + L2 (gamma={GAMMA}, rf={RISK_FREE_RATE}), long-only, median wall time")
    print(
        f"{'N':>5} {'streamfolio ms':>15} {'PyPortfolioOpt ms':>18} {'ratio':>8} {'max |dw|':>10}"
        f" {'|dw| Clarabel':>14}"
    )
    for row in bench_optimizer():
        difference = row["max_abs_weight_diff"]
        shown = "failed" if math.isnan(difference) else f"{difference:.1e}"
        clarabel = row["clarabel_weight_diff"]
        shown_clarabel = "failed" if math.isnan(clarabel) else f"{clarabel:.1e}"
        print(
            f"{row['n_assets']:>5} {row['streamfolio_ms']:>15.3f} {row['pypfopt_ms']:>18.2f} "
            f"{row['ratio']:>7.1f}x {shown:>10} {shown_clarabel:>14}"
        )
    print("max |dw| 'failed': PyPortfolioOpt's default solver stopped without an optimal status.")


if __name__ == "__main__":
    main()
