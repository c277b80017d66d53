"""Analytics benchmarks: online-moment updates and the optimiser, each next to a baseline.

Run: ``python bench/analytics.py`` (``--quick`` for a smoke run). Prints the figures recorded in
BENCHMARKS.md. Baselines are measured in the same run:

* online moments: a bare numpy Welford rank-1 update (``M2 += np.outer(d, x - mean)``), the
  textbook form, against ``WelfordMoments.update`` / ``EWMoments.update``;
* optimiser: PyPortfolioOpt ``EfficientFrontier`` + ``L2_reg`` + ``max_sharpe`` on the same
  problem (see ``bench/analytics_optimize.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from streamfolio.core.moments import EWMoments, WelfordMoments
from streamfolio.core.types import FloatArray


def _per_update_us(update: Callable[[FloatArray], None], rows: FloatArray, repeats: int) -> float:
    """Median over ``repeats`` loops of the mean µs per update."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x in rows:
            update(x)
        samples.append((time.perf_counter() - start) / len(rows) * 1e6)
    return statistics.median(samples)


class _BareWelford:
    """The textbook numpy Welford step, the baseline: allocates an N×N outer product each time."""

    def __init__(self, n: int) -> None:
        self.n = 0
        self.mean = np.zeros(n)
        self.m2 = np.zeros((n, n))

    def update(self, x: FloatArray) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += np.outer(d, x - self.mean)


def bench_moments(
    sizes: tuple[int, ...] = (10, 100, 1000), quick: bool = False
) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    results = []
    for n in sizes:
        count = {10: 20_000, 100: 10_000, 1000: 500}.get(n, 1_000)
        if quick:
            count = max(count // 20, 50)
        rows = rng.normal(0.0, 0.01, size=(count, n))
        repeats = 5

        welford = WelfordMoments(n)
        ew = EWMoments(n, half_life_bars=390)
        results.append(
            {
                "n_assets": n,
                "bare_numpy_us": _per_update_us(_BareWelford(n).update, rows, repeats),
                "welford_us": _per_update_us(welford.update, rows, repeats),
                "ewm_us": _per_update_us(ew.update, rows, repeats),
            }
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--skip-optimizer", action="store_true", help="online moments only")
    args = parser.parse_args(argv)

    print("online moments, µs per update (median of 5 loops)")
    print(f"{'N':>6} {'bare numpy':>11} {'Welford':>9} {'EW':>9} {'Welford/bare':>13}")
    for r in bench_moments(quick=args.quick):
        ratio = r["welford_us"] / r["bare_numpy_us"]
        print(
            f"{r['n_assets']:>6.0f} {r['bare_numpy_us']:>11.2f} {r['welford_us']:>9.2f} "
            f"{r['ewm_us']:>9.2f} {ratio:>13.2f}"
        )
    if not args.skip_optimizer:
        from analytics_optimize import main as optimizer_main

        print()
        optimizer_main()


if __name__ == "__main__":
    main()
