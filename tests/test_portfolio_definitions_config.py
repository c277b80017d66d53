"""A portfolio as a definition message and back, validated as the configuration validates it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamfolio.config import example_config_path, load_config
from streamfolio.errors import ConfigError
from streamfolio.portfolios import definition_of, portfolio_of, portfolios_from_entries

ROOT = Path(__file__).resolve().parents[1]


def test_the_example_portfolio_file_adds_to_the_demo() -> None:
    demo = load_config(ROOT / "examples" / "demo.yaml", environ={})
    entry = yaml.safe_load((ROOT / "examples" / "portfolio.yaml").read_text())
    (portfolio,) = portfolios_from_entries([entry], demo)
    assert portfolio.bar_seconds == 86_400  # from the demo's defaults
    assert portfolio.policy.sharpe_threshold == 0.6


def test_a_configured_portfolio_survives_the_round_trip_through_its_definition() -> None:
    settings = load_config(example_config_path(), environ={})
    for portfolio in settings.portfolios:
        back = portfolio_of(definition_of(portfolio, 1_750_000_000_000), settings)
        # Initial weights and Black-Litterman views are messages of their own.
        same = portfolio.model_dump(exclude={"weights", "black_litterman"})
        assert back.model_dump(exclude={"weights", "black_litterman"}) == same


def test_a_notify_url_with_a_secret_is_never_published() -> None:
    settings = load_config(example_config_path(), environ={"HOOK": "tgram://123:abc/42"})
    entry = {"id": "p", "tickers": ["IAM"], "notify": ["json://user:pass@localhost/hook"]}
    (portfolio,) = portfolios_from_entries([entry], settings)
    with pytest.raises(ConfigError, match=r"portfolios\[p\]\.notify\[0\].*env:NAME"):
        definition_of(portfolio, 0)
    by_reference = {**entry, "notify": ["env:HOOK"]}
    (portfolio,) = portfolios_from_entries(
        [by_reference], settings, environ={"HOOK": "tgram://123:abc/42"}
    )
    assert definition_of(portfolio, 0).notify == ("env:HOOK",)


def test_a_definition_is_refused_with_the_configurations_messages() -> None:
    settings = load_config(example_config_path(), environ={})
    entry = {"id": "p", "tickers": ["IAM", "ATW"], "bounds": {"max": 0.3}}
    with pytest.raises(ConfigError, match=r"portfolios\[p\]\.bounds.*no weights fit"):
        portfolios_from_entries([entry], settings)
