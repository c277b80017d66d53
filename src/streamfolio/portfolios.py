"""From configured portfolios to the analytics core's inputs (one place, used by every engine),
and portfolios as data: a portfolio as the message of the definitions topic
(:func:`definition_of`) and back (:func:`portfolio_of`), validated as the configuration is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamfolio.config.portfolio import PortfolioSettings
from streamfolio.config.sections import ExchangeSettings
from streamfolio.config.settings import Settings
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.errors import ConfigError
from streamfolio.messages.definitions import PortfolioDefinition

if TYPE_CHECKING:  # the optimisers: not for the job's processes (streamfolio.core's docstring)
    from streamfolio.core.policy import PolicySettings as CorePolicySettings


def portfolio_spec(portfolio: PortfolioSettings, exchange: ExchangeSettings) -> PortfolioSpec:
    """The streaming view of a configured portfolio."""
    return PortfolioSpec(
        portfolio_id=portfolio.id,
        tickers=tuple(portfolio.tickers),
        bar_ms=portfolio.bar_seconds * 1000,
        periods_per_year=portfolio.periods_per_year_value(exchange),
        risk_free_rate=portfolio.risk_free_rate,
        estimator=portfolio.estimator.kind,
        half_life_bars=portfolio.estimator.half_life_bars,
        sharpe_threshold=portfolio.policy.sharpe_threshold,
        bounds=weight_bounds(portfolio),
    )


def weight_bounds(portfolio: PortfolioSettings) -> tuple[tuple[float, float], ...]:
    """Per-asset ``(lo, hi)`` in ticker order."""
    return tuple(portfolio.bounds.interval(t) for t in portfolio.tickers)


def policy_settings(portfolio: PortfolioSettings, exchange: ExchangeSettings) -> CorePolicySettings:
    """The rebalance policy of a configured portfolio."""
    policy = portfolio.policy
    from streamfolio.core.policy import PolicySettings as CorePolicySettings

    return CorePolicySettings(
        sharpe_threshold=policy.sharpe_threshold,
        band=policy.band,
        cooldown_ms=int(policy.cooldown_seconds * 1000),
        min_improvement=policy.min_improvement,
        max_turnover=policy.max_turnover,
        min_observations=policy.min_observations,
        risk_free_rate=portfolio.risk_free_rate,
        periods_per_year=portfolio.periods_per_year_value(exchange),
        gamma=portfolio.gamma,
        bounds=weight_bounds(portfolio),
        objective=portfolio.objective.kind,
        target_volatility=portfolio.objective.target_volatility,
        target_return=portfolio.objective.target_return,
    )


# -- portfolios as data: the definitions topic ------------------------------------------------


def job_bar_seconds(settings: Settings) -> tuple[int, ...]:
    """The bar sizes (seconds) the job computes: ``flink.bar_seconds`` and those of the
    configured portfolios, ascending.

    >>> from streamfolio.config import example_config_path, load_config
    >>> job_bar_seconds(load_config(example_config_path(), environ={}))
    (60, 300)
    """
    sizes = {p.bar_seconds for p in settings.portfolios} | set(settings.flink.bar_seconds)
    return tuple(sorted(sizes))


def universe(settings: Settings) -> frozenset[str]:
    """The tickers any portfolio may hold: ``exchange.universe`` and the configured ones."""
    configured = {t for p in settings.portfolios for t in p.tickers}
    return frozenset(settings.exchange.universe) | configured


def definition_of(portfolio: PortfolioSettings, timestamp: int) -> PortfolioDefinition:
    """``portfolio`` as the message of the definitions topic, effective at ``timestamp``.

    Its initial weights (and Black-Litterman views) are not part of it: they become the
    initial weights message. A ``notify`` URL holding a secret is refused, since every reader
    of the topic would see it; its ``env:``/``file:`` reference is published instead.

    >>> from streamfolio.config import example_config_path, load_config
    >>> banks = load_config(example_config_path(), environ={}).portfolio("banks")
    >>> d = definition_of(banks, 1_750_000_000_000)
    >>> d.parameters["tickers"], d.parameters["bar_seconds"], d.parameters["policy"]["band"]
    (['ATW', 'BCP', 'BOA'], 300, 0.05)
    """
    notify = []
    for i, url in enumerate(portfolio.notify):
        shared = url.shareable()
        if shared is None:
            raise ConfigError(
                f"portfolios[{portfolio.id}].notify[{i}]",
                "this URL holds a secret, and every reader of the portfolios topic would see it",
                'put it in an environment variable or a file and write "env:NAME" or '
                '"file:PATH"; the rebalancer reads it there',
            )
        notify.append(shared)
    bounds = portfolio.bounds
    return PortfolioDefinition(
        timestamp,
        portfolio.id,
        tuple(portfolio.tickers),
        portfolio.bar_seconds,
        owner=portfolio.owner,
        risk_free_rate=portfolio.risk_free_rate,
        periods_per_year=portfolio.periods_per_year,
        estimator=portfolio.estimator.model_dump(),
        prior_count=portfolio.prior_count,
        bounds={
            "min": bounds.min,
            "max": bounds.max,
            "per_asset": {t: list(pair) for t, pair in bounds.per_asset.items()},
        },
        gamma=portfolio.gamma,
        policy=portfolio.policy.model_dump(),
        objective=portfolio.objective.model_dump(),
        notify=tuple(notify),
    )


def portfolios_from_entries(
    entries: Sequence[Mapping[str, Any]],
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> tuple[PortfolioSettings, ...]:
    """Portfolio entries (as under ``portfolios:`` in a configuration file) validated as the
    configuration validates them, ``settings.defaults`` merged in, and checked against what
    the job computes: tickers of :func:`universe`, a bar size of :func:`job_bar_seconds`.
    Raises :class:`~streamfolio.errors.ConfigError` naming the key and the fix."""
    from streamfolio.config import settings_from_mapping

    data = {
        "defaults": settings.defaults.model_dump(exclude_unset=True, by_alias=True),
        "portfolios": [dict(e) for e in entries],
    }
    portfolios = settings_from_mapping(data, environ=environ, base_dir=base_dir).portfolios
    known, sizes = universe(settings), job_bar_seconds(settings)
    for p in portfolios:
        unknown = [t for t in p.tickers if t not in known]
        if unknown:
            raise ConfigError(
                f"portfolios[{p.id}].tickers",
                f"{unknown} not in the universe the job computes bars for",
                "add them to exchange.universe and restart the job, or choose others",
            )
        if p.bar_seconds not in sizes:
            raise ConfigError(
                f"portfolios[{p.id}].bar_seconds",
                f"the job computes no {p.bar_seconds} s bars",
                f"use one of {list(sizes)}, or add it to flink.bar_seconds and restart the job",
            )
    return portfolios


def portfolio_of(
    definition: PortfolioDefinition,
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
) -> PortfolioSettings:
    """The portfolio a definition read from the topic describes, validated as
    :func:`portfolios_from_entries` validates a file (the same messages)."""
    entry = {"id": definition.portfolio_id, **definition.parameters}
    return portfolios_from_entries([entry], settings, environ=environ)[0]
