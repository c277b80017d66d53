"""Configuration: the examples load, defaults merge, the environment overrides, and every problem
names its key and a fix."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from streamfolio.config import (
    CONFIG_ENV,
    BlackLittermanSettings,
    ExchangeSettings,
    KafkaSettings,
    PortfolioDefaults,
    PortfolioSettings,
    Settings,
    example_config_path,
    load_config,
    settings_from_mapping,
)
from streamfolio.core.calendar import CSE
from streamfolio.errors import ConfigError

REPO = Path(__file__).parents[1]
EXAMPLES = REPO / "examples"
TICKERS_11 = ("AKT", "ATW", "BOA", "BCP", "MDP", "MUT", "IAM", "RIS", "TGC", "ADI", "IMO")


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one(**fields: Any) -> dict[str, Any]:
    """A configuration with a single portfolio `p1` over ATW and IAM."""
    return {"portfolios": [{"id": "p1", "tickers": ["ATW", "IAM"], **fields}]}


def config_error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(data)
    assert caught.value.fix, "every error says how to fix it"
    return caught.value


# ------------------------------------------------------------------------------------ examples


def test_example_loads() -> None:
    settings = load_config(EXAMPLES / "cse.yaml", environ={})
    assert [p.id for p in settings.portfolios] == ["portf1", "banks"]
    portf1 = settings.portfolio("portf1")
    assert portf1.tickers == TICKERS_11
    assert portf1.weights is None
    bl = portf1.initial_black_litterman
    assert bl is not None and bl.market_caps is None and len(bl.views) == 2
    assert bl.views[1].assets == {"IAM": 1.0, "BCP": -1.0}
    assert portf1.bounds.max == 0.25
    banks = settings.portfolio("banks")
    assert banks.weights == {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2}
    assert banks.initial_black_litterman is None
    assert banks.estimator.kind == "ewm" and banks.estimator.half_life_bars == 360
    assert banks.policy.sharpe_threshold == 0.3
    assert banks.policy.max_turnover == 0.5  # from defaults
    assert settings.topics.weights == "Weights"
    assert settings.exchange.calendar() == CSE


def test_example_is_the_packaged_copy() -> None:
    assert example_config_path().read_bytes() == (EXAMPLES / "cse.yaml").read_bytes()


def test_minimal_example_loads_with_defaults() -> None:
    settings = load_config(EXAMPLES / "minimal.yaml", environ={})
    assert settings.kafka.bootstrap_servers == "localhost:9092"
    assert settings.flink.delivery == "at-least-once"
    demo = settings.portfolio("demo")
    assert demo.tickers == ("ATW", "IAM")
    assert demo.initial_black_litterman == BlackLittermanSettings()
    assert demo.periods_per_year_value(settings.exchange) == 360 * 246


def test_example_defaults_are_the_model_defaults() -> None:
    # cse.yaml claims to show the defaults: keep it honest.
    settings = load_config(EXAMPLES / "cse.yaml", environ={})
    for section in ("exchange", "kafka", "topics", "flink", "rebalancer", "defaults"):
        assert getattr(settings, section) == Settings.model_fields[section].default, section


def test_model_dump_round_trips() -> None:
    settings = load_config(EXAMPLES / "cse.yaml", environ={})
    dumped = settings.model_dump(mode="json", by_alias=True)
    json.dumps(dumped)
    assert settings_from_mapping(dumped) == settings
    assert dumped["portfolios"][0]["black_litterman"]["views"][0]["return"] == 0.12


# ------------------------------------------------------------------------ finding the file


def test_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, (EXAMPLES / "minimal.yaml").read_text("utf-8"))
    settings = load_config(environ={CONFIG_ENV: str(path)})
    assert settings.portfolios[0].id == "demo"


def test_path_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(EXAMPLES / "minimal.yaml"))
    assert load_config().portfolios[0].id == "demo"


def test_no_path() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={})
    assert caught.value.key == "--config"
    assert caught.value.problem == "no configuration file given"
    assert "STREAMFOLIO_CONFIG" in (caught.value.fix or "")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as caught:
        load_config(tmp_path / "nope.yaml", environ={})
    assert caught.value.key == "--config"
    assert "examples/cse.yaml" in (caught.value.fix or "")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("- a\n- b\n", "holds a list, not a mapping"),
        ("kafka:\n  partitions: 3\n   client_id: x\n", "not valid YAML at line 3, column"),
        ("portfolios: [\n", "not valid YAML at line 2"),
        ("kafka: {}\nflink: {}\nkafka: {}\n", "key 'kafka' appears twice (first on line 1)"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert caught.value.key == "--config"
    assert problem in caught.value.problem
    assert caught.value.fix


# --------------------------------------------------------------------------------- defaults


def test_defaults_merge_under_portfolios() -> None:
    settings = settings_from_mapping(
        {
            "defaults": {
                "risk_free_rate": 0.03,
                "policy": {"sharpe_threshold": 1.0, "band": 0.1},
                "bounds": {"max": 0.8},
            },
            "portfolios": [
                {"id": "a", "tickers": ["ATW", "IAM"], "policy": {"band": 0.2}},
                {"id": "b", "tickers": ["BCP", "BOA"], "risk_free_rate": 0.01},
            ],
        }
    )
    a, b = settings.portfolios
    assert a.risk_free_rate == 0.03 and b.risk_free_rate == 0.01
    assert a.policy.sharpe_threshold == 1.0 and a.policy.band == 0.2  # merged key by key
    assert b.policy.band == 0.1
    assert a.policy.cooldown_seconds == 300  # neither sets it: the model default
    assert a.bounds.max == b.bounds.max == 0.8
    assert settings.defaults.risk_free_rate == 0.03


def test_defaults_given_as_models() -> None:
    settings = Settings(
        defaults=PortfolioDefaults(gamma=0.5),
        portfolios=(PortfolioSettings(id="a", tickers=("ATW",), risk_free_rate=0.01),),
    )
    assert settings.portfolios[0].gamma == 0.5
    assert settings.portfolios[0].risk_free_rate == 0.01


def test_defaults_errors_are_reported_once() -> None:
    error = config_error({"defaults": {"gama": 0.1}, **one()})
    assert error.key == "defaults.gama"
    assert "did you mean 'gamma'" in (error.fix or "")
    assert "portfolios" not in error.problem


# ------------------------------------------------------------------------------ environment


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  partitions: 6\nportfolios: [{id: a, tickers: [ATW]}]\n")
    settings = load_config(
        path,
        environ={
            "STREAMFOLIO_KAFKA__BOOTSTRAP_SERVERS": "broker1:9092,broker2:9092",
            "STREAMFOLIO_FLINK__PARALLELISM": "4",
            "STREAMFOLIO_TOPICS__PRICES": "prices",
            "STREAMFOLIO_KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
            "STREAMFOLIO_KAFKA__SECURITY__USERNAME": "u",
            "STREAMFOLIO_KAFKA__SECURITY__PASSWORD": "12345",
            "STREAMFOLIO_KAFKA__LIBRDKAFKA__SOCKET_TIMEOUT_MS": "5000",
            "STREAMFOLIO_KAFKA__JAVA__REQUEST_TIMEOUT_MS": "7000",
            "STREAMFOLIO_KAFKA__LOCAL__PORT": "19092",
            "STREAMFOLIO_CONFIG": "ignored because a path is given",
            "UNRELATED__VAR": "x",
        },
    )
    assert settings.kafka.bootstrap_servers == "broker1:9092,broker2:9092"
    assert settings.kafka.partitions == 6
    assert settings.kafka.local.port == 19092
    assert settings.flink.parallelism == 4
    assert settings.topics.prices == "prices"
    assert settings.kafka.client_config("feed")["sasl.password"] == "12345"
    assert settings.kafka.client_config("feed")["socket.timeout.ms"] == "5000"
    assert settings.kafka.java_properties()["request.timeout.ms"] == "7000"
    assert "12345" not in repr(settings)
    assert "12345" not in json.dumps(settings.model_dump(mode="json"))


def test_environment_errors_name_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "portfolios: [{id: a, tickers: [ATW]}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"STREAMFOLIO_KAFKA__PARTITIONS": "zero"})
    assert caught.value.key == "kafka.partitions"
    assert "STREAMFOLIO_KAFKA__PARTITIONS" in caught.value.problem
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"STREAMFOLIO_KAFKA__BOOTSTRAP_SERVER": "x:1"})
    assert caught.value.key == "kafka.bootstrap_server"
    assert "did you mean 'bootstrap_servers'" in (caught.value.fix or "")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"STREAMFOLIO_PORTFOLIOS__0__ID": "x"})
    assert caught.value.key == "STREAMFOLIO_PORTFOLIOS__0__ID"


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"kafkaa": {}, **one()}, "kafkaa", "unknown key"),
        (one(policy={"bandd": 0.1}), "portfolios[p1].policy.bandd", "unknown key"),
        ({"portfolios": []}, "portfolios", "no portfolio configured"),
        ({}, "portfolios", "required key is missing"),
        ({"portfolios": [{"id": "x"}]}, "portfolios[x].tickers", "required key is missing"),
        (
            {"portfolios": [{"id": "a", "tickers": ["ATW"]}, {"id": "a", "tickers": ["IAM"]}]},
            "portfolios[1].id",
            "portfolio id 'a' is used twice",
        ),
        (one(id="bad id"), "portfolios[0].id", "not a valid portfolio id"),
        (one(tickers=[]), "portfolios[p1].tickers", "at least one ticker"),
        (one(tickers=["ATW", "ATW"]), "portfolios[p1].tickers", "duplicate tickers ['ATW']"),
        (one(tickers=["ATW", "iam"]), "portfolios[p1].tickers[1]", "'iam' is not a ticker"),
        (one(tickers=["ATW", False]), "portfolios[p1].tickers[1]", "valid string"),
        (one(weights={"ATW": 1.0}), "portfolios[p1].weights", "missing ['IAM']"),
        (
            one(weights={"ATW": 0.5, "IAM": 0.5, "BCP": 0.0}),
            "portfolios[p1].weights",
            "extra ['BCP']",
        ),
        (one(weights={"ATW": 0.6, "IAM": 0.5}), "portfolios[p1].weights", "sum to 1.1, not 1"),
        (one(weights={"ATW": -0.5, "IAM": 1.5}), "portfolios[p1].weights.ATW", "negative"),
        (
            one(weights={"ATW": float("nan"), "IAM": 0.5}),
            "portfolios[p1].weights.ATW",
            "finite number",
        ),
        (
            one(weights={"ATW": 0.9, "IAM": 0.1}, bounds={"max": 0.8}),
            "portfolios[p1].weights.ATW",
            "outside the bounds [0.0, 0.8]",
        ),
        (
            one(weights={"ATW": 0.5, "IAM": 0.5}, black_litterman={}),
            "portfolios[p1].black_litterman",
            "unused when weights are given",
        ),
        (one(bounds={"max": 0.4}), "portfolios[p1].bounds", "upper bounds to 0.8"),
        (one(bounds={"min": 0.6}), "portfolios[p1].bounds", "lower bounds sum to 1.2"),
        (one(bounds={"min": 0.5, "max": 0.4}), "portfolios[p1].bounds.min", "exceeds max"),
        (one(bounds={"max": 1.5}), "portfolios[p1].bounds.max", "less than or equal to 1"),
        (
            one(bounds={"per_asset": {"BCP": [0, 0.5]}}),
            "portfolios[p1].bounds.per_asset",
            "['BCP'] not in this portfolio's tickers",
        ),
        (
            one(bounds={"per_asset": {"ATW": [0.6, 0.5]}}),
            "portfolios[p1].bounds.per_asset.ATW",
            "lower bound 0.6 exceeds upper bound 0.5",
        ),
        (
            one(estimator={"kind": "ewm"}),
            "portfolios[p1].estimator.half_life_bars",
            "needs half_life_bars",
        ),
        (
            one(estimator={"kind": "welford", "half_life_bars": 10}),
            "portfolios[p1].estimator.half_life_bars",
            "only used by kind ewm",
        ),
        (one(estimator={"kind": "ewma"}), "portfolios[p1].estimator.kind", "'welford' or 'ewm'"),
        (one(bar_seconds=7), "portfolios[p1].bar_seconds", "does not tile a day"),
        (one(bar_seconds=0), "portfolios[p1].bar_seconds", "does not tile a day"),
        (one(periods_per_year=0), "portfolios[p1].periods_per_year", "greater than 0"),
        (one(prior_count=1), "portfolios[p1].prior_count", "greater than or equal to 2"),
        (one(risk_free_rate=2.5), "portfolios[p1].risk_free_rate", "looks like a percentage"),
        (one(gamma=-1), "portfolios[p1].gamma", "greater than or equal to 0"),
        (one(policy={"max_turnover": 0}), "portfolios[p1].policy.max_turnover", "greater than 0"),
        (one(notify=["foo"]), "portfolios[p1].notify[0]", "not a notification URL"),
        (
            one(black_litterman={"market_caps": {"ATW": 1e11}}),
            "portfolios[p1].black_litterman.market_caps",
            "no market cap for ['IAM']",
        ),
        (
            one(black_litterman={"market_caps": {"ATW": 1e11, "IAM": 1e11, "BCP": 1e10}}),
            "portfolios[p1].black_litterman.market_caps",
            "['BCP'] not in this portfolio's tickers",
        ),
        (
            one(black_litterman={"market_caps": {"ATW": -1, "IAM": 2}}),
            "portfolios[p1].black_litterman.market_caps.ATW",
            "greater than 0",
        ),
        (
            one(black_litterman={"views": [{"assets": {"BCP": 1}, "return": 0.1}]}),
            "portfolios[p1].black_litterman.views[0].assets",
            "['BCP'] not in this portfolio's tickers",
        ),
        (
            one(black_litterman={"views": [{"assets": {"ATW": 1}, "return": 12}]}),
            "portfolios[p1].black_litterman.views[0].return",
            "looks like a percentage",
        ),
        (
            one(
                black_litterman={"views": [{"assets": {"ATW": 1}, "return": 0.1, "confidence": 2}]}
            ),
            "portfolios[p1].black_litterman.views[0].confidence",
            "less than or equal to 1",
        ),
        (
            one(black_litterman={"views": [{"assets": {"ATW": 0}, "return": 0.1}]}),
            "portfolios[p1].black_litterman.views[0].assets.ATW",
            "coefficient 0",
        ),
        (
            one(black_litterman={"views": [{"assets": {}, "return": 0.1}]}),
            "portfolios[p1].black_litterman.views[0].assets",
            "at least 1 item",
        ),
        (one(black_litterman={"tau": 0}), "portfolios[p1].black_litterman.tau", "greater than 0"),
        ({"flink": {"delivery": "exactly-twice"}, **one()}, "flink.delivery", "exactly-twice"),
        ({"flink": {"parallelism": 0}, **one()}, "flink.parallelism", "greater than or equal"),
        ({"kafka": {"partitions": "x"}, **one()}, "kafka.partitions", "valid integer"),
        (
            {"kafka": {"librdkafka": {"bootstrap.servers": "x"}}, **one()},
            "kafka.librdkafka.bootstrap.servers",
            "belongs in kafka.bootstrap_servers",
        ),
        ({"kafka": {"local": {"port": 70000}}, **one()}, "kafka.local.port", "less than"),
        (
            {"topics": {"weights": "portfStats"}, **one()},
            "topics.weights",
            "used both for initial_stats and for weights",
        ),
        ({"topics": {"prices": "a b"}, **one()}, "topics.prices", "not a legal Kafka topic"),
        ({"exchange": {"timezone": "Mars/Base"}, **one()}, "exchange.timezone", "unknown time"),
        ({"exchange": {"session_open": 600}, **one()}, "exchange.session_open", "as the number"),
        ({"exchange": {"session_open": "9h30"}, **one()}, "exchange.session_open", "HH:MM"),
        (
            {"exchange": {"session_open": "16:00"}, **one()},
            "exchange.session_close",
            "is not before session_close",
        ),
        (
            {"exchange": {"extra_holidays": ["2026-13-01"]}, **one()},
            "exchange.extra_holidays[0]",
            "valid date",
        ),
    ],
)
def test_validation_errors(data: dict[str, Any], key: str, problem: str) -> None:
    error = config_error(data)
    assert error.key == key
    assert problem in error.problem
    assert str(error).startswith(f"config key '{key}': ")


def test_unknown_key_suggests_the_spelling() -> None:
    error = config_error({"kafka": {"bootstrap_server": "x"}, **one()})
    assert error.fix is not None
    assert error.fix.startswith("did you mean 'bootstrap_servers'? allowed keys here: ")


def test_other_problems_are_mentioned() -> None:
    error = config_error({"kafka": {"partitions": 0}, "flink": {"parallelism": 0}, **one()})
    assert error.key == "kafka.partitions"
    assert "also check flink.parallelism" in error.problem


def test_yaml_quirks_are_explained(tmp_path: Path) -> None:
    text = "exchange: {session_open: 10:00}\nportfolios: [{id: a, tickers: [ATW]}]\n"
    with pytest.raises(ConfigError, match='quote it: "10:00"'):
        load_config(write(tmp_path, text), environ={})
    text = "portfolios: [{id: a, tickers: [ATW, NO]}]\n"
    with pytest.raises(ConfigError, match="quote the value"):
        load_config(write(tmp_path, text), environ={})


def test_yaml_dates_and_relative_views(tmp_path: Path) -> None:
    text = """
exchange:
  extra_holidays: [2026-11-20]
portfolios:
  - id: a
    tickers: [ATW, IAM]
    black_litterman:
      views: [{assets: {IAM: 1, ATW: -1}, return: 0.02, confidence: 1}]
"""
    settings = load_config(write(tmp_path, text), environ={})
    assert settings.exchange.extra_holidays == (dt.date(2026, 11, 20),)
    assert dt.date(2026, 11, 20) in settings.exchange.calendar().holidays
    view = settings.portfolios[0].black_litterman.views[0]  # type: ignore[union-attr]
    assert view.expected_return == 0.02 and view.assets == {"IAM": 1.0, "ATW": -1.0}


# ------------------------------------------------------------------------------- accessors


def test_portfolio_lookup() -> None:
    settings = settings_from_mapping(one())
    assert settings.portfolio("p1").id == "p1"
    with pytest.raises(ConfigError) as caught:
        settings.portfolio("p2")
    assert caught.value.key == "portfolios"
    assert caught.value.fix == "use one of p1"


def test_periods_per_year_value() -> None:
    exchange = ExchangeSettings(trading_days_per_year=250)
    assert PortfolioSettings(id="a", tickers=("ATW",)).periods_per_year_value(exchange) == 90_000
    fixed = PortfolioSettings(id="a", tickers=("ATW",), periods_per_year=252)
    assert fixed.periods_per_year_value(exchange) == 252
    daily = PortfolioSettings(id="a", tickers=("ATW",), bar_seconds=86_400)
    assert daily.periods_per_year_value(exchange) == 250


def test_settings_are_frozen() -> None:
    settings = settings_from_mapping(one())
    with pytest.raises(ValueError, match="frozen"):
        settings.kafka = KafkaSettings()  # type: ignore[misc]


def test_non_cse_exchange_has_no_builtin_holidays() -> None:
    calendar = ExchangeSettings(name="TEST", timezone="UTC").calendar()
    assert calendar.holidays == frozenset()
    assert calendar.name == "TEST"


def test_flink_max_future_skew_moved_to_validation() -> None:
    portfolios = [{"id": "p", "tickers": ["ATW", "IAM"]}]
    with pytest.warns(DeprecationWarning, match=r"validation\.max_future_skew_ms"):
        settings = settings_from_mapping(
            {"flink": {"max_future_skew_ms": 5}, "portfolios": portfolios}
        )
    assert settings.validation.max_future_skew_ms == 5
    with pytest.raises(ConfigError, match=r"flink\.max_future_skew_ms"):
        settings_from_mapping(
            {
                "flink": {"max_future_skew_ms": 5},
                "validation": {"max_future_skew_ms": 3},
                "portfolios": portfolios,
            }
        )
