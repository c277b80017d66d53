"""Oracle tests for streamfolio.core.black_litterman against PyPortfolioOpt 1.6."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pypfopt import EfficientFrontier, objective_functions
from pypfopt import black_litterman as pypfopt_bl

from streamfolio.core.black_litterman import (
    BlackLittermanPosterior,
    absolute_views,
    black_litterman,
    black_litterman_weights,
    default_omega,
    idzorek_omega,
    market_implied_prior_returns,
    market_implied_risk_aversion,
)
from streamfolio.core.optimize import OptimizationStatus
from streamfolio.core.types import FloatArray
from streamfolio.errors import OptimizationError

N_ASSETS = 8
RISK_FREE_RATE = 0.02
TAU = 0.05
POSTERIOR_TOLERANCE = 1e-10
WEIGHT_TOLERANCE = 1e-5


def market(seed: int = 0) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Annualised covariance, market caps and a year of daily index closes."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(1.0, 0.3, N_ASSETS)
    loadings = rng.normal(0.0, 1.0, (N_ASSETS, 2))
    cov = (
        np.outer(beta, beta) * 0.18**2
        + loadings @ loadings.T * 0.06**2
        + np.diag(rng.uniform(0.1, 0.3, N_ASSETS) ** 2)
    )
    caps = rng.lognormal(3.0, 1.0, N_ASSETS)
    closes = 10_000 * np.cumprod(1.0 + rng.normal(0.0004, 0.01, 253))
    return cov, caps, closes


@pytest.fixture
def cov() -> FloatArray:
    return market()[0]


@pytest.fixture
def pi(cov: FloatArray) -> FloatArray:
    _, caps, _ = market()
    return market_implied_prior_returns(caps, 2.5, cov, RISK_FREE_RATE)


RELATIVE_P = np.array(
    [
        [1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.5, 0.5, -0.5, -0.5, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    ]
)
RELATIVE_Q = np.array([0.03, 0.02, 0.12])
ABSOLUTE_VIEWS = {0: 0.15, 5: 0.04, 7: 0.10}


def pypfopt_model(cov: FloatArray, pi: FloatArray, **kwargs: Any) -> Any:
    return pypfopt_bl.BlackLittermanModel(cov, pi=pi, tau=TAU, **kwargs)


def assert_posterior_matches(posterior: BlackLittermanPosterior, model: Any) -> None:
    np.testing.assert_allclose(
        posterior.expected_returns, model.bl_returns().to_numpy(), rtol=0, atol=POSTERIOR_TOLERANCE
    )
    np.testing.assert_allclose(
        posterior.covariance, model.bl_cov().to_numpy(), rtol=0, atol=POSTERIOR_TOLERANCE
    )


# --- market-implied inputs -------------------------------------------------------------------


def test_market_implied_risk_aversion_matches_pypfopt() -> None:
    _, _, closes = market()

    ours = market_implied_risk_aversion(closes, 252, RISK_FREE_RATE)

    theirs = pypfopt_bl.market_implied_risk_aversion(pd.Series(closes), 252, RISK_FREE_RATE)
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_market_implied_prior_returns_matches_pypfopt(cov: FloatArray) -> None:
    _, caps, _ = market()
    tickers = [f"T{i}" for i in range(N_ASSETS)]

    ours = market_implied_prior_returns(caps, 2.5, cov, RISK_FREE_RATE)

    theirs = pypfopt_bl.market_implied_prior_returns(
        pd.Series(caps, index=tickers), 2.5, pd.DataFrame(cov, tickers, tickers), RISK_FREE_RATE
    )
    np.testing.assert_allclose(ours, theirs.to_numpy(), rtol=0, atol=1e-14)


# --- omega -----------------------------------------------------------------------------------


def test_default_omega_matches_pypfopt(cov: FloatArray) -> None:
    ours = default_omega(cov, RELATIVE_P, TAU)

    theirs = pypfopt_bl.BlackLittermanModel.default_omega(cov, RELATIVE_P, TAU)
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=0)


def test_idzorek_omega_matches_pypfopt(cov: FloatArray, pi: FloatArray) -> None:
    confidences = np.array([0.6, 0.0, 1.0])

    ours = idzorek_omega(cov, RELATIVE_P, confidences, TAU)

    theirs = pypfopt_bl.BlackLittermanModel.idzorek_method(
        confidences.reshape(-1, 1), cov, pi.reshape(-1, 1), RELATIVE_Q, RELATIVE_P, TAU, 2.5
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=0)


# --- posterior -------------------------------------------------------------------------------


def test_posterior_with_relative_views_matches_pypfopt(cov: FloatArray, pi: FloatArray) -> None:
    posterior = black_litterman(cov, pi, RELATIVE_P, RELATIVE_Q, tau=TAU)

    assert_posterior_matches(posterior, pypfopt_model(cov, pi, P=RELATIVE_P, Q=RELATIVE_Q))


def test_posterior_with_absolute_views_matches_pypfopt(cov: FloatArray, pi: FloatArray) -> None:
    P, Q = absolute_views(N_ASSETS, ABSOLUTE_VIEWS)

    posterior = black_litterman(cov, pi, P, Q, tau=TAU)

    assert_posterior_matches(posterior, pypfopt_model(cov, pi, absolute_views=ABSOLUTE_VIEWS))


@pytest.mark.parametrize("confidences", [[0.6, 0.25, 0.9], [1.0, 0.0, 0.5]])
def test_posterior_with_idzorek_confidences_matches_pypfopt(
    cov: FloatArray, pi: FloatArray, confidences: list[float]
) -> None:
    posterior = black_litterman(
        cov, pi, RELATIVE_P, RELATIVE_Q, view_confidences=confidences, tau=TAU
    )

    model = pypfopt_model(
        cov, pi, P=RELATIVE_P, Q=RELATIVE_Q, omega="idzorek", view_confidences=confidences
    )
    assert_posterior_matches(posterior, model)


def test_posterior_with_explicit_omega_matches_pypfopt(cov: FloatArray, pi: FloatArray) -> None:
    omega = np.diag([0.001, 0.004, 0.0025])

    posterior = black_litterman(cov, pi, RELATIVE_P, RELATIVE_Q, omega=omega, tau=TAU)

    assert_posterior_matches(
        posterior, pypfopt_model(cov, pi, P=RELATIVE_P, Q=RELATIVE_Q, omega=omega)
    )


def test_singular_view_system_uses_least_squares_as_pypfopt(
    cov: FloatArray, pi: FloatArray
) -> None:
    """Two identical certain views make PτΣPᵀ + Ω singular."""
    P = np.vstack([np.eye(N_ASSETS)[2], np.eye(N_ASSETS)[2]])
    Q = np.array([0.09, 0.09])
    omega = np.zeros((2, 2))

    posterior = black_litterman(cov, pi, P, Q, omega=omega, tau=TAU)

    assert_posterior_matches(posterior, pypfopt_model(cov, pi, P=P, Q=Q, omega=omega))
    assert posterior.expected_returns[2] == pytest.approx(0.09, abs=1e-12)


def test_posterior_covariance_is_symmetric(cov: FloatArray, pi: FloatArray) -> None:
    posterior = black_litterman(cov, pi, RELATIVE_P, RELATIVE_Q)

    np.testing.assert_array_equal(posterior.covariance, posterior.covariance.T)


def test_posterior_is_read_only_and_leaves_the_prior_alone(cov: FloatArray, pi: FloatArray) -> None:
    prior = pi.copy()
    posterior = black_litterman(cov, pi)

    with pytest.raises(ValueError, match="read-only"):
        posterior.expected_returns[0] = 1.0
    pi[0] = 99.0
    np.testing.assert_array_equal(posterior.expected_returns, prior)


def test_no_views_give_the_prior_and_the_inflated_covariance(
    cov: FloatArray, pi: FloatArray
) -> None:
    posterior = black_litterman(cov, pi, tau=TAU)

    np.testing.assert_array_equal(posterior.expected_returns, pi)
    np.testing.assert_allclose(posterior.covariance, (1 + TAU) * cov, rtol=1e-15)


def test_no_views_are_the_limit_of_a_view_held_with_zero_confidence(
    cov: FloatArray, pi: FloatArray
) -> None:
    P, Q = absolute_views(N_ASSETS, {3: 0.5})

    ignored = black_litterman(cov, pi, P, Q, view_confidences=[0.0], tau=TAU)
    none = black_litterman(cov, pi, tau=TAU)

    np.testing.assert_allclose(ignored.expected_returns, none.expected_returns, atol=1e-7)
    np.testing.assert_allclose(ignored.covariance, none.covariance, atol=1e-9)


def test_absolute_views_keep_the_given_order() -> None:
    P, Q = absolute_views(4, {3: 0.1, 1: -0.02})

    np.testing.assert_array_equal(P, [[0, 0, 0, 1], [0, 1, 0, 0]])
    np.testing.assert_array_equal(Q, [0.1, -0.02])


# --- weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.1])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (0.0, 0.3)])
def test_weights_match_pypfopt_max_sharpe_on_the_posterior(
    cov: FloatArray, pi: FloatArray, gamma: float, bounds: tuple[float, float]
) -> None:
    result = black_litterman_weights(
        cov,
        pi,
        RELATIVE_P,
        RELATIVE_Q,
        view_confidences=[0.6, 0.25, 0.9],
        tau=TAU,
        risk_free_rate=RISK_FREE_RATE,
        gamma=gamma,
        bounds=bounds,
    )

    model = pypfopt_model(
        cov, pi, P=RELATIVE_P, Q=RELATIVE_Q, omega="idzorek", view_confidences=[0.6, 0.25, 0.9]
    )
    with warnings.catch_warnings():
        # PyPortfolioOpt warns that extra objectives may misbehave under max_sharpe's change of
        # variable; L2_reg is exact there (tangency on Σ + γI).
        warnings.filterwarnings("ignore", message="max_sharpe transforms", category=UserWarning)
        frontier = EfficientFrontier(model.bl_returns(), model.bl_cov(), weight_bounds=bounds)
        frontier.add_objective(objective_functions.L2_reg, gamma=gamma)
        frontier.max_sharpe(risk_free_rate=RISK_FREE_RATE)
    assert result.status is OptimizationStatus.OPTIMAL
    assert result.weights is not None
    assert np.max(np.abs(result.weights - frontier.weights)) <= WEIGHT_TOLERANCE


def test_weights_without_views_are_the_max_sharpe_of_the_prior(
    cov: FloatArray, pi: FloatArray
) -> None:
    """With γ = 0 scaling Σ by 1 + τ leaves the tangency portfolio unchanged."""
    _, caps, _ = market()

    result = black_litterman_weights(cov, pi, risk_free_rate=RISK_FREE_RATE)

    assert result.weights is not None
    np.testing.assert_allclose(result.weights, caps / caps.sum(), atol=1e-9)


# --- malformed calls -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c, p: market_implied_risk_aversion([100.0, 101.0]), "at least 3"),
        (lambda c, p: market_implied_risk_aversion([[100.0, 101.0, 102.0]]), "1-D"),
        (lambda c, p: market_implied_risk_aversion([100.0, math.nan, 102.0]), "finite"),
        (lambda c, p: market_implied_risk_aversion([100.0, 0.0, 102.0]), "positive"),
        (lambda c, p: market_implied_risk_aversion([100.0, 100.0, 100.0]), "constant"),
        (lambda c, p: market_implied_prior_returns(np.ones(3), 2.5, c), "entries"),
        (lambda c, p: market_implied_prior_returns(-np.ones(N_ASSETS), 2.5, c), "non-negative"),
        (lambda c, p: market_implied_prior_returns(np.ones(N_ASSETS), 0.0, c), "risk_aversion"),
        (lambda c, p: market_implied_prior_returns(np.ones(N_ASSETS), 2.5, c[:3]), "square"),
        (lambda c, p: absolute_views(N_ASSETS, {N_ASSETS: 0.1}), "index outside"),
        (lambda c, p: absolute_views(N_ASSETS, {-1: 0.1}), "index outside"),
        (lambda c, p: black_litterman(c, p, RELATIVE_P), "both P and Q"),
        (lambda c, p: black_litterman(c, p, RELATIVE_P, RELATIVE_Q[:2]), "one per row"),
        (lambda c, p: black_litterman(c, p, RELATIVE_P[:, :3], RELATIVE_Q), r"\(k, 8\)"),
        (lambda c, p: black_litterman(c, p[:3], RELATIVE_P, RELATIVE_Q), "pi has 3"),
        (lambda c, p: black_litterman(c, p, RELATIVE_P, RELATIVE_Q, tau=0.0), "tau"),
        (lambda c, p: black_litterman(c, p, RELATIVE_P, RELATIVE_Q, tau=1.5), "tau"),
        (
            lambda c, p: black_litterman(
                c, p, RELATIVE_P, RELATIVE_Q, omega=np.eye(3), view_confidences=[1, 1, 1]
            ),
            "not both",
        ),
        (
            lambda c, p: black_litterman(c, p, RELATIVE_P, RELATIVE_Q, omega=np.eye(2)),
            "omega has shape",
        ),
        (
            lambda c, p: black_litterman(
                c, p, RELATIVE_P, RELATIVE_Q, view_confidences=[0.5, 1.2, 0.5]
            ),
            r"\[0, 1\]",
        ),
        (
            lambda c, p: black_litterman(c, p, RELATIVE_P, RELATIVE_Q, view_confidences=[0.5]),
            "one per view",
        ),
        (
            lambda c, p: black_litterman(c, p, RELATIVE_P, np.array([0.1, math.nan, 0.1])),
            "finite",
        ),
    ],
)
def test_malformed_calls_raise_optimization_error(
    cov: FloatArray, pi: FloatArray, call: Any, match: str
) -> None:
    with pytest.raises(OptimizationError, match=match):
        call(cov, pi)
