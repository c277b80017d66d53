"""Secrets are secrets (issue #11, item 5): notification URLs and Kafka credentials never show in
reprs, dumps, configuration errors or log lines, and can come from the environment or a file."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfolio.config import (
    SecretURL,
    Settings,
    example_config_path,
    load_config,
    mask_url,
    settings_from_mapping,
)
from streamfolio.errors import ConfigError
from streamfolio.messages import RebalanceEvent
from streamfolio.rebalancer.notify import Notifier, notification_for

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSLACKTOKEN"
BASIC = "https://alice:PASSWORD123@hooks.example.com/notify"
QUERY = "json://hooks.example.com/hook?token=QUERYTOKEN42"
TOKENS = ("XXXXSLACKTOKEN", "PASSWORD123", "QUERYTOKEN42", "SASLSECRET99")


def _config(tmp_path: Path, notify: list[Any], **extra: Any) -> Path:
    data = {
        "kafka": {
            "security": {"protocol": "SASL_SSL", "username": "u", "password": "SASLSECRET99"}
        },
        "portfolios": [{"id": "banks", "tickers": ["ATW", "BCP"], "notify": notify}],
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _clean(text: str) -> None:
    for token in TOKENS:
        assert token not in text, f"{token} shown in: {text}"


def _settings(tmp_path: Path) -> Settings:
    return load_config(_config(tmp_path, [SLACK, BASIC, QUERY]), environ={})


# ---------------------------------------------------------------------- reprs and dumps


def test_repr_str_and_dumps_of_settings_hide_every_secret(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for shown in (
        repr(settings),
        str(settings),
        repr(settings.portfolio("banks")),
        settings.model_dump_json(),
        str(settings.model_dump()),
        str(settings.model_dump(mode="json")),
        repr(notification_for(_event(), settings.portfolio("banks"))),
    ):
        _clean(shown)
    assert "https://hooks.slack.com/***" in repr(settings)


def test_the_secrets_are_still_there_for_who_needs_them(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    urls = [u.get_secret_value() for u in settings.portfolio("banks").notify]
    assert urls == [SLACK, BASIC, QUERY]
    assert notification_for(_event(), settings.portfolio("banks")).urls == (SLACK, BASIC, QUERY)
    assert settings.kafka.client_config("feed")["sasl.password"] == "SASLSECRET99"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (SLACK, "https://hooks.slack.com/***"),
        (BASIC, "https://hooks.example.com/***"),
        (QUERY, "json://hooks.example.com/***"),
        ("mailto://user:pw@gmail.com?to=a@b.c", "mailto://gmail.com/***"),
        ("slack://TokenA/TokenB/TokenC", "slack://***"),
        ("tgram://bottoken/ChatID", "tgram://***"),
        ("garbage", "***"),
    ],
)
def test_masked_urls_keep_the_scheme_and_a_real_host_only(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert repr(SecretURL(url)) == f"SecretURL({masked!r})"


# ---------------------------------------------------------------------- config errors


def test_a_bad_notify_entry_next_to_a_secret_one_is_reported_without_either(
    tmp_path: Path,
) -> None:
    bad = "hooks.slack.com/services/T111/B111/BADENTRYTOKEN"  # the scheme forgotten
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, [SLACK, bad]), environ={})
    assert error.value.key == "portfolios[banks].notify[1]"
    assert "not a notification URL" in str(error.value)
    _clean(str(error.value))
    assert "BADENTRYTOKEN" not in str(error.value)


@pytest.mark.parametrize("bad", [12345, {"url": SLACK}, None])
def test_a_notify_entry_of_the_wrong_type_is_not_echoed(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, [SLACK, bad]), environ={})
    assert error.value.key.startswith("portfolios[banks].notify")
    _clean(str(error.value))
    assert "12345" not in str(error.value)


def test_an_error_elsewhere_does_not_show_the_secrets(tmp_path: Path) -> None:
    path = _config(tmp_path, [SLACK], flink={"parallelism": "many"})
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.key == "flink.parallelism"
    _clean(str(error.value))


def test_a_kafka_property_value_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = _config(tmp_path, [], kafka={"librdkafka": {"sasl.password": 987654321}})
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.key == "kafka.librdkafka.sasl.password"
    assert "987654321" not in str(error.value)


def test_a_notify_string_instead_of_a_list_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, SLACK), environ={})  # type: ignore[arg-type]
    assert error.value.key == "portfolios[banks].notify"
    _clean(str(error.value))


# ------------------------------------------------------------- environment and files


def test_env_and_file_references_resolve_at_load(tmp_path: Path) -> None:
    secret_file = tmp_path / "secrets" / "hook"
    secret_file.parent.mkdir()
    secret_file.write_text(BASIC + "\n", encoding="utf-8")
    path = _config(tmp_path, ["env:SLACK_URL", "file:secrets/hook", f"file:{secret_file}"])
    settings = load_config(path, environ={"SLACK_URL": SLACK})
    urls = [u.get_secret_value() for u in settings.portfolio("banks").notify]
    assert urls == [SLACK, BASIC, BASIC]
    _clean(repr(settings))


def test_references_in_defaults_reach_every_portfolio(tmp_path: Path) -> None:
    data = {
        "defaults": {"notify": ["env:TEAM_HOOK"]},
        "portfolios": [{"id": "a", "tickers": ["ATW"]}, {"id": "b", "tickers": ["IAM"]}],
    }
    settings = settings_from_mapping(data, environ={"TEAM_HOOK": SLACK})
    assert [p.notify[0].get_secret_value() for p in settings.portfolios] == [SLACK, SLACK]


def test_a_missing_variable_or_file_names_the_key_and_not_the_other_secrets(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, [SLACK, "env:NOPE_URL"]), environ={})
    assert error.value.key == "portfolios[banks].notify[1]"
    assert "environment variable NOPE_URL" in str(error.value) and "not set" in str(error.value)
    _clean(str(error.value))

    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, ["file:/nonexistent/slack", SLACK]), environ={})
    assert error.value.key == "portfolios[banks].notify[0]"
    assert "cannot read /nonexistent/slack" in str(error.value)
    _clean(str(error.value))


def test_a_variable_that_holds_no_url_is_reported_without_its_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, ["env:HOOK"]), environ={"HOOK": "XXXXSLACKTOKEN"})
    assert "environment variable HOOK does not hold a notification URL" in str(error.value)
    _clean(str(error.value))


def test_the_global_notify_can_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("portfolios:\n  - {id: banks, tickers: [ATW]}\n", encoding="utf-8")
    one = load_config(path, environ={"STREAMFOLIO_DEFAULTS__NOTIFY": QUERY})
    assert [u.get_secret_value() for u in one.portfolio("banks").notify] == [QUERY]
    # A YAML list: several URLs, references among them.
    several = load_config(
        path, environ={"STREAMFOLIO_DEFAULTS__NOTIFY": f"['{SLACK}', 'env:X']", "X": BASIC}
    )
    assert [u.get_secret_value() for u in several.portfolio("banks").notify] == [SLACK, BASIC]
    _clean(repr(one) + repr(several))
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={"STREAMFOLIO_DEFAULTS__NOTIFY": "hooks/XXXXSLACKTOKEN"})
    assert error.value.key == "defaults.notify[0]"
    assert "STREAMFOLIO_DEFAULTS__NOTIFY" in str(error.value)
    _clean(str(error.value))


def test_portfolios_from_the_environment_point_at_env_references(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, []), environ={"STREAMFOLIO_PORTFOLIOS__BANKS__NOTIFY": SLACK})
    assert "env:NAME" in str(error.value)
    _clean(str(error.value))


def test_the_example_configuration_documents_env_and_file_references() -> None:
    text = example_config_path().read_text(encoding="utf-8")
    assert "env:" in text and "file:" in text
    root = Path(__file__).resolve().parents[1]
    assert (root / "examples" / "cse.yaml").read_bytes() == example_config_path().read_bytes()


# ------------------------------------------------------------------------- the notifier


def _event() -> RebalanceEvent:
    return RebalanceEvent(
        "banks",
        1_790_845_200_000,
        "sharpe 0.12 below threshold 0.30",
        "rebalance",
        {"ATW": 0.5, "BCP": 0.5},
        {"ATW": 0.7, "BCP": 0.3},
        0.12,
        0.58,
        0.081,
        0.14,
        0.2,
        "optimal",
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_failed_delivery_logs_no_token(caplog: pytest.LogCaptureFixture) -> None:
    port = _closed_port()
    urls = [
        f"json://127.0.0.1:{port}/services/T000/B000/XXXXSLACKTOKEN",
        f"json://alice:PASSWORD123@127.0.0.1:{port}/hook?token=QUERYTOKEN42",
        f"https://alice:PASSWORD123@127.0.0.1:{port}/services/XXXXSLACKTOKEN?token=QUERYTOKEN42",
    ]
    settings = settings_from_mapping(
        {"portfolios": [{"id": "banks", "tickers": ["ATW", "BCP"], "notify": urls}]}
    )
    notifier = Notifier()
    with caplog.at_level(logging.DEBUG):  # apprise's own lines too, debug included
        notifier.submit(notification_for(_event(), settings.portfolio("banks")))
        notifier.close(timeout=30)
    assert notifier.failed == 1
    assert f"could not notify the owner of banks (json://127.0.0.1:{port}/***" in caplog.text
    _clean(caplog.text)
    assert "/services/" not in caplog.text


def test_a_sender_error_quoting_the_url_is_logged_masked(caplog: pytest.LogCaptureFixture) -> None:
    def explode(note: Any) -> bool:
        raise RuntimeError(f"cannot post to {note.urls[0]} (path {note.urls[0][8:]})")

    settings = settings_from_mapping(
        {"portfolios": [{"id": "banks", "tickers": ["ATW", "BCP"], "notify": [SLACK]}]}
    )
    notifier = Notifier(send=explode)
    with caplog.at_level(logging.DEBUG):
        notifier.submit(notification_for(_event(), settings.portfolio("banks")))
        notifier.close(timeout=5)
    assert notifier.failed == 1 and "RuntimeError" in caplog.text
    _clean(caplog.text)


# ------------------------------------------------------------------------- the CLI


def test_the_store_cli_help_does_not_show_a_database_password() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "streamfolio.cli", "store", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "STREAMFOLIO_DATABASE": "postgresql://me:DBPASSWORD77@db/history",
            "COLUMNS": "200",
        },
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "DBPASSWORD77" not in run.stdout + run.stderr
