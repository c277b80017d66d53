"""Online moments against two-pass references (portfolio.md §2.1–2.4, §2.9; SEMANTICS §5)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamfolio.core.moments import (
    EWMoments,
    MissingTickersError,
    MomentsError,
    StatsLayout,
    WelfordMoments,
    from_upper_triangle,
    moments_from_state,
    moments_from_stats_record,
    stats_record,
    upper_triangle,
)

REL = 1e-9
ABS = 1e-15

returns_element = st.floats(
    min_value=-0.1, max_value=0.1, allow_nan=False, allow_infinity=False, allow_subnormal=False
)


@st.composite
def return_matrices(draw: st.DrawFn, min_rows: int = 3, max_rows: int = 60) -> np.ndarray:
    """T × N per-bar returns, 2 ≤ N ≤ 8, either drawn element-wise or from a seeded generator."""
    n_assets = draw(st.integers(min_value=2, max_value=8))
    n_rows = draw(st.integers(min_value=min_rows, max_value=max_rows))
    if draw(st.booleans()):
        return draw(hnp.arrays(np.float64, (n_rows, n_assets), elements=returns_element))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    scale = draw(st.sampled_from([1e-4, 1e-2, 1.0]))
    return rng.normal(0.0, scale, size=(n_rows, n_assets)) + rng.normal(0.0, scale, size=n_assets)


def welford_over(rows: np.ndarray) -> WelfordMoments:
    moments = WelfordMoments(rows.shape[1])
    for row in rows:
        moments.update(row)
    return moments


def random_covariance(rng: np.random.Generator, n: int, scale: float = 1e-4) -> np.ndarray:
    factor = rng.normal(size=(n, n))
    return scale * (factor @ factor.T / n + 0.1 * np.eye(n))


# -- Welford ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(return_matrices())
def test_welford_equals_two_pass_mean_and_unbiased_covariance(xs: np.ndarray) -> None:
    moments = welford_over(xs)
    assert moments.n == len(xs)
    assert moments.n_assets == xs.shape[1]
    np.testing.assert_allclose(moments.mean, np.mean(xs, axis=0), rtol=REL, atol=ABS)
    np.testing.assert_allclose(moments.covariance, np.cov(xs.T, ddof=1), rtol=REL, atol=ABS)
    np.testing.assert_allclose(
        moments.comoment, np.cov(xs.T, ddof=1) * (len(xs) - 1), rtol=REL, atol=ABS * len(xs)
    )
    assert np.array_equal(moments.covariance, moments.covariance.T)


def test_welford_covariance_is_zero_until_two_observations() -> None:
    moments = WelfordMoments(3)
    assert moments.n == 0
    assert np.array_equal(moments.covariance, np.zeros((3, 3)))
    moments.update([0.01, 0.02, 0.03])
    assert np.array_equal(moments.mean, [0.01, 0.02, 0.03])
    assert np.array_equal(moments.covariance, np.zeros((3, 3)))


def test_welford_rejects_vectors_of_the_wrong_length() -> None:
    moments = WelfordMoments(3)
    with pytest.raises(MomentsError, match="vector of 3 returns"):
        moments.update([0.1, 0.2])
    assert moments.n == 0


def test_mean_property_is_a_copy_that_cannot_corrupt_the_state() -> None:
    moments = welford_over(np.array([[0.1, 0.2], [0.3, 0.4]]))
    moments.mean[:] = 99.0
    np.testing.assert_allclose(moments.mean, [0.2, 0.3], rtol=1e-15)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), xs=return_matrices(min_rows=3))
def test_merging_two_welford_states_at_any_cut_equals_the_full_data(
    data: st.DataObject, xs: np.ndarray
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(xs)), label="cut")
    merged = welford_over(xs[:cut]).merge(welford_over(xs[cut:]))
    assert merged.n == len(xs)
    np.testing.assert_allclose(merged.mean, np.mean(xs, axis=0), rtol=REL, atol=ABS)
    np.testing.assert_allclose(merged.covariance, np.cov(xs.T, ddof=1), rtol=REL, atol=ABS)
    # The merged state keeps going like any other.
    extra = xs[: min(3, len(xs))] * 0.5
    for row in extra:
        merged.update(row)
    full = np.vstack([xs, extra])
    np.testing.assert_allclose(merged.covariance, np.cov(full.T, ddof=1), rtol=REL, atol=ABS)


def test_merging_two_empty_states_is_empty_and_dimensions_must_agree() -> None:
    assert WelfordMoments(2).merge(WelfordMoments(2)).n == 0
    with pytest.raises(MomentsError, match="different dimensions"):
        WelfordMoments(2).merge(WelfordMoments(3))


# -- prior --------------------------------------------------------------------------------------


def sample_with_exact_moments(
    rng: np.random.Generator, mean: np.ndarray, covariance: np.ndarray, n_rows: int
) -> np.ndarray:
    """``n_rows`` vectors whose sample mean is ``mean`` and sample covariance ``covariance``.

    Random data are centred, whitened by the Cholesky factor of their own sample covariance and
    coloured with the Cholesky factor of the target.
    """
    z = rng.normal(size=(n_rows, len(mean)))
    z -= z.mean(axis=0)
    own = np.linalg.cholesky(np.cov(z.T, ddof=1))
    white = np.linalg.solve(own, z.T).T
    return white @ np.linalg.cholesky(covariance).T + mean


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    n_assets=st.integers(min_value=2, max_value=8),
    extra_rows=st.integers(min_value=1, max_value=30),
    n_updates=st.integers(min_value=0, max_value=40),
)
def test_prior_then_updates_equals_welford_over_a_sample_with_the_prior_moments(
    seed: int, n_assets: int, extra_rows: int, n_updates: int
) -> None:
    rng = np.random.default_rng(seed)
    mean0 = rng.normal(0.0, 1e-3, size=n_assets)
    cov0 = random_covariance(rng, n_assets)
    n0 = n_assets + extra_rows
    synthetic = sample_with_exact_moments(rng, mean0, cov0, n0)
    # The construction itself: exactly the prior's moments, to rounding (of the rows, whose
    # size is the returns' scale ~1e-2, not the mean's ~1e-3: 6e-17 was seen, seed 2897675).
    np.testing.assert_allclose(synthetic.mean(axis=0), mean0, rtol=1e-12, atol=1e-15)
    # Entries near zero get the rounding of the matrix's scale (8e-15 on 1e-4 variances was
    # seen, seed 44568305), not of their own.
    scale = np.abs(cov0).max()
    np.testing.assert_allclose(np.cov(synthetic.T, ddof=1), cov0, rtol=1e-10, atol=1e-10 * scale)

    updates = rng.normal(0.0, 1e-2, size=(n_updates, n_assets))
    seeded = WelfordMoments.from_prior(mean0, cov0, n0)
    assert seeded.n == n0
    np.testing.assert_allclose(seeded.comoment, cov0 * (n0 - 1), rtol=1e-15)
    for row in updates:
        seeded.update(row)
    reference = welford_over(np.vstack([synthetic, updates]))

    assert seeded.n == reference.n == n0 + n_updates
    np.testing.assert_allclose(seeded.mean, reference.mean, rtol=REL, atol=ABS)
    np.testing.assert_allclose(seeded.covariance, reference.covariance, rtol=REL, atol=ABS)


def test_prior_validates_its_shape_and_count() -> None:
    with pytest.raises(MomentsError, match="does not match"):
        WelfordMoments.from_prior([0.0, 0.0], np.eye(3), 10)
    with pytest.raises(MomentsError, match=">= 0"):
        WelfordMoments.from_prior([0.0, 0.0], np.eye(2), -1)


def test_a_prior_worth_one_observation_carries_its_mean_but_no_covariance() -> None:
    prior = WelfordMoments.from_prior([0.1, 0.2], np.eye(2), 1)
    assert prior.n == 1
    assert np.array_equal(prior.covariance, np.zeros((2, 2)))
    prior.update([0.3, 0.0])
    np.testing.assert_allclose(prior.mean, [0.2, 0.1], rtol=1e-15)
    np.testing.assert_allclose(
        prior.covariance, np.cov(np.array([[0.1, 0.2], [0.3, 0.0]]).T), rtol=1e-12
    )


# -- exponentially weighted -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    xs=return_matrices(min_rows=2),
    half_life=st.floats(min_value=0.5, max_value=200.0, allow_nan=False, allow_infinity=False),
)
def test_ew_moments_equal_pandas_ewm_adjust_false_bias_true(
    xs: np.ndarray, half_life: float
) -> None:
    n_assets = xs.shape[1]
    ew = EWMoments(n_assets, half_life_bars=half_life)
    for row in xs:
        ew.update(row)
    alpha = 1.0 - 2.0 ** (-1.0 / half_life)
    assert ew.alpha == pytest.approx(alpha, rel=1e-15)
    frame = pd.DataFrame(xs)
    ref_cov = frame.ewm(alpha=alpha, adjust=False).cov(bias=True).iloc[-n_assets:].to_numpy()
    ref_mean = frame.ewm(alpha=alpha, adjust=False).mean().iloc[-1].to_numpy()
    assert ew.n == len(xs)
    np.testing.assert_allclose(ew.mean, ref_mean, rtol=REL, atol=ABS)
    np.testing.assert_allclose(ew.covariance, ref_cov, rtol=REL, atol=ABS)


def test_ew_first_vector_sets_the_mean_with_zero_covariance() -> None:
    ew = EWMoments(2, half_life_bars=5)
    ew.update([0.1, -0.2])
    assert np.array_equal(ew.mean, [0.1, -0.2])
    assert np.array_equal(ew.covariance, np.zeros((2, 2)))


def test_ew_lazy_scale_is_folded_back_without_changing_the_result() -> None:
    # Half-life 1 halves the scale every bar: 2^-400 ≈ 4e-121 crosses the rescale threshold.
    rng = np.random.default_rng(3)
    xs = rng.normal(0.0, 1e-2, size=(400, 3))
    ew = EWMoments(3, half_life_bars=1.0)
    for row in xs:
        ew.update(row)
    assert ew.to_state()["scale"] > 1e-100
    frame = pd.DataFrame(xs)
    ref = frame.ewm(alpha=0.5, adjust=False).cov(bias=True).iloc[-3:].to_numpy()
    np.testing.assert_allclose(ew.covariance, ref, rtol=REL, atol=ABS)


@pytest.mark.parametrize("half_life", [0.0, -1.0, float("inf"), float("nan")])
def test_ew_rejects_a_half_life_that_is_not_a_positive_number(half_life: float) -> None:
    with pytest.raises(MomentsError, match="half_life_bars"):
        EWMoments(2, half_life_bars=half_life)


# -- state round trips ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    xs=return_matrices(min_rows=3),
    kind=st.sampled_from(["welford", "ewm"]),
)
def test_state_round_trip_then_more_updates_is_bitwise_identical(
    data: st.DataObject, xs: np.ndarray, kind: str
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(xs)), label="cut")
    n_assets = xs.shape[1]
    original = WelfordMoments(n_assets) if kind == "welford" else EWMoments(n_assets, 7.5)
    for row in xs[:cut]:
        original.update(row)
    # Through JSON, as a checkpoint would store it.
    restored = moments_from_state(json.loads(json.dumps(original.to_state())))
    assert type(restored) is type(original)
    assert restored.to_state() == original.to_state()
    for row in xs[cut:]:
        original.update(row)
        restored.update(row)
        assert restored.n == original.n
        assert np.array_equal(restored.mean, original.mean)
        assert np.array_equal(restored.covariance, original.covariance)


@settings(max_examples=60, deadline=None)
@given(
    xs=return_matrices(min_rows=2),
    kind=st.sampled_from(["welford", "ewm"]),
    layout=st.sampled_from(["maps", "packed"]),
)
def test_stats_record_round_trip_keeps_mean_covariance_count_and_estimator(
    xs: np.ndarray, kind: str, layout: StatsLayout
) -> None:
    n_assets = xs.shape[1]
    tickers = [f"T{i}" for i in range(n_assets)]
    moments = WelfordMoments(n_assets) if kind == "welford" else EWMoments(n_assets, 12.0)
    for row in xs:
        moments.update(row)
    record = json.loads(json.dumps(stats_record(moments, "pf", tickers, 123_000, layout)))
    assert record["timestamp"] == 123_000
    assert record["portfolio_id"] == "pf"
    assert record["count"] == len(xs)
    assert record["estimator"] == kind
    assert record["tickers"] == tickers

    order, restored = moments_from_stats_record(record)
    assert order == tuple(tickers)
    assert restored.kind == kind
    assert restored.n == moments.n
    assert np.array_equal(restored.mean, moments.mean)
    np.testing.assert_allclose(restored.covariance, moments.covariance, rtol=1e-15, atol=0)
    if kind == "ewm":
        assert isinstance(restored, EWMoments)
        assert restored.half_life_bars == 12.0


@pytest.mark.parametrize("layout", ["maps", "packed"])
def test_stats_record_can_be_read_in_another_ticker_order(layout: StatsLayout) -> None:
    moments = welford_over(np.array([[0.1, 0.0, -0.1], [0.2, 0.1, 0.0], [0.0, 0.3, 0.1]]))
    record = stats_record(moments, "pf", ["A", "B", "C"], 0, layout)
    order, restored = moments_from_stats_record(record, ["C", "A", "B"])
    assert order == ("C", "A", "B")
    perm = [2, 0, 1]
    assert np.array_equal(restored.mean, moments.mean[perm])
    np.testing.assert_allclose(
        restored.covariance, moments.covariance[np.ix_(perm, perm)], rtol=1e-15
    )
    with pytest.raises(MissingTickersError, match="D"):
        moments_from_stats_record(record, ["A", "D"])


@settings(max_examples=60, deadline=None)
@given(xs=return_matrices(min_rows=2))
def test_the_upper_triangle_holds_a_symmetric_matrix_to_the_bit(xs: np.ndarray) -> None:
    covariance = welford_over(xs).covariance
    n = covariance.shape[0]
    upper = upper_triangle(covariance)
    assert upper.shape == (n * (n + 1) // 2,)
    assert np.array_equal(from_upper_triangle(upper, n), covariance)
    stacked = upper_triangle(np.stack([covariance, 2 * covariance]))
    assert np.array_equal(stacked, np.stack([upper, 2 * upper]))


def test_a_reference_record_without_count_is_worth_two_observations() -> None:
    # Reference producers send only the first four fields (PortfolioStats.avsc: count 0 = unknown).
    record = {
        "timestamp": 0,
        "portfolio_id": "pf",
        "meanReturns": {"A": 0.001, "B": 0.002},
        "covarianceMatrix": {"A": {"A": 1e-4, "B": 2e-5}, "B": {"A": 2e-5, "B": 4e-4}},
    }
    order, restored = moments_from_stats_record(record)
    assert order == ("A", "B")
    assert restored.n == 2
    assert restored.kind == "welford"
    np.testing.assert_allclose(restored.covariance, [[1e-4, 2e-5], [2e-5, 4e-4]], rtol=1e-15)


# -- numerical stability ----------------------------------------------------------------------


def naive_one_pass_covariance(xs: np.ndarray) -> np.ndarray:
    """Σx·xᵀ and Σx in one pass, then (Σxxᵀ − n·x̄x̄ᵀ)/(n − 1): the textbook formula that cancels."""
    n = len(xs)
    sum_x = np.zeros(xs.shape[1])
    sum_xx = np.zeros((xs.shape[1], xs.shape[1]))
    for row in xs:
        sum_x += row
        sum_xx += np.outer(row, row)
    mean = sum_x / n
    result: np.ndarray = (sum_xx - n * np.outer(mean, mean)) / (n - 1)
    return result


def relative_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - reference) / np.linalg.norm(reference))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welford_stays_accurate_on_raw_prices_near_1e8_where_the_naive_formula_fails(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    prices = 1e8 + rng.normal(0.0, 1.0, size=(500, 3))
    reference = np.cov(prices.T, ddof=1)  # two-pass float64

    welford_error = relative_error(welford_over(prices).covariance, reference)
    naive_error = relative_error(naive_one_pass_covariance(prices), reference)

    assert welford_error <= 1e-7
    # The contrast this test documents: the naive one-pass formula loses every digit (its error
    # is larger than the covariance itself; 10-26x for these seeds).
    assert naive_error > 1.0
    assert naive_error > 1e4 * welford_error


@pytest.mark.parametrize("seed", [0, 1])
def test_welford_stays_accurate_on_returns_of_prices_near_1e8(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prices = 1e8 + rng.normal(0.0, 1.0, size=(501, 3))
    returns = np.log(prices[1:] / prices[:-1])
    reference = np.cov(returns.T, ddof=1)
    assert relative_error(welford_over(returns).covariance, reference) <= 1e-7
