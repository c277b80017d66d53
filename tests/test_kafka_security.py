"""Kafka security written once (``kafka.security``), turned into both client stacks' properties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfolio.config import KafkaSettings, load_config, settings_from_mapping
from streamfolio.errors import ConfigError

PORTFOLIOS = [{"id": "p", "tickers": ["ATW", "BCP"]}]


def _load(tmp_path: Path, kafka: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "conf" / "config.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"kafka": kafka, "portfolios": PORTFOLIOS}), encoding="utf-8")
    return load_config(path, environ=environ or {})


def _secured(tmp_path: Path) -> Any:
    secrets = tmp_path / "conf" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "feed.password").write_text("feed-pass\n", encoding="utf-8")
    (secrets / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n")
    return _load(
        tmp_path,
        {
            "security": {
                "protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "username": "admin",
                "password": "admin-pass",
                "ca_file": "secrets/ca.pem",
                "principals": {
                    "feed": {"username": "sf-feed", "password_file": "secrets/feed.password"}
                },
            }
        },
    )


def test_each_component_connects_as_its_own_principal_in_both_dialects(tmp_path: Path) -> None:
    kafka = _secured(tmp_path).kafka
    feed = kafka.client_config("feed")
    assert feed["security.protocol"] == "SASL_SSL"
    assert feed["sasl.mechanism"] == "SCRAM-SHA-256"
    assert (feed["sasl.username"], feed["sasl.password"]) == ("sf-feed", "feed-pass")
    # Relative paths start at the configuration file's folder.
    assert feed["ssl.ca.location"] == str(tmp_path / "conf" / "secrets" / "ca.pem")
    assert kafka.client_config("store")["sasl.username"] == "admin"  # the default principal

    java = kafka.java_properties("feed")
    assert java["sasl.mechanism"] == "SCRAM-SHA-256"
    assert java["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="sf-feed" password="feed-pass";'
    )
    assert java["ssl.truststore.type"] == "PEM"
    assert java["ssl.truststore.certificates"].startswith("-----BEGIN CERTIFICATE-----")
    assert "sasl.username" not in java and "ssl.ca.location" not in java


def test_passwords_never_show_in_reprs_or_dumps(tmp_path: Path) -> None:
    settings = _secured(tmp_path)
    shown = repr(settings) + json.dumps(settings.model_dump(mode="json"))
    assert "admin-pass" not in shown and "feed-pass" not in shown


def test_a_password_file_is_read_when_a_client_is_made_not_when_the_config_loads(
    tmp_path: Path,
) -> None:
    settings = _load(
        tmp_path,
        {"security": {"protocol": "SASL_PLAINTEXT", "username": "u", "password_file": "later"}},
    )
    with pytest.raises(ConfigError) as error:
        settings.kafka.client_config("feed")
    assert error.value.key == "kafka.security.password_file"
    assert "kafka up" in error.value.fix
    (tmp_path / "conf" / "later").write_text("now-there\n", encoding="utf-8")
    assert settings.kafka.client_config("feed")["sasl.password"] == "now-there"


def test_a_password_with_quotes_stays_one_jaas_value() -> None:
    kafka = KafkaSettings.model_validate(
        {"security": {"protocol": "SASL_PLAINTEXT", "username": "u", "password": 'a"b\\c'}}
    )
    assert kafka.java_properties()["sasl.jaas.config"].endswith('password="a\\"b\\\\c";')


def test_mutual_tls_gives_the_key_pair_to_both_stacks(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("-----BEGIN CERTIFICATE-----\nC\n-----END CERTIFICATE-----\n")
    (tmp_path / "k.pem").write_text("-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n")
    kafka = KafkaSettings.model_validate(
        {
            "security": {
                "protocol": "SSL",
                "certificate_file": str(tmp_path / "c.pem"),
                "key_file": str(tmp_path / "k.pem"),
                "key_password": "kp",
            }
        }
    )
    rd = kafka.client_config("job")
    assert rd["ssl.certificate.location"] == str(tmp_path / "c.pem")
    assert rd["ssl.key.password"] == "kp" and "sasl.username" not in rd
    java = kafka.java_properties()
    assert java["ssl.keystore.type"] == "PEM"
    assert java["ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert java["ssl.keystore.certificate.chain"].startswith("-----BEGIN CERTIFICATE-----")


def test_raw_properties_go_to_their_own_stack_over_the_typed_ones() -> None:
    kafka = KafkaSettings.model_validate(
        {
            "security": {"protocol": "SSL"},
            "librdkafka": {"ssl.endpoint.identification.algorithm": "none"},
            "java": {"ssl.endpoint.identification.algorithm": ""},
        }
    )
    assert kafka.client_config("feed")["ssl.endpoint.identification.algorithm"] == "none"
    assert kafka.java_properties()["ssl.endpoint.identification.algorithm"] == ""


@pytest.mark.parametrize(
    ("security", "key", "says"),
    [
        ({"sasl.password": "x"}, "kafka.security.sasl.password", "kafka.librdkafka"),
        ({"protocol": "SASL_SSL"}, "kafka.security", "needs credentials"),
        ({"protocol": "SASL_SSL", "username": "u"}, "kafka.security", "go together"),
        (
            {"protocol": "SASL_SSL", "username": "u", "password": "p", "password_file": "f"},
            "kafka.security",
            "both password and password_file",
        ),
        ({"protocol": "SSL", "key_file": "k.pem"}, "kafka.security", "go together"),
        ({"protocol": "TLS"}, "kafka.security.protocol", "SASL_SSL"),
        (
            {"protocol": "SASL_SSL", "principals": {"feed": {"username": "f"}}},
            "kafka.security.principals.feed",
            "exactly one of password and password_file",
        ),
        (
            {"protocol": "SASL_SSL", "principals": {"writer": {"username": "w", "password": "p"}}},
            "kafka.security.principals.writer",
            "",
        ),
    ],
)
def test_security_mistakes_name_the_key_and_never_echo_a_password(
    security: dict[str, Any], key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as error:
        settings_from_mapping({"kafka": {"security": security}, "portfolios": PORTFOLIOS})
    assert error.value.key.startswith(key)
    assert says in str(error.value)
    for secret in ("'p'", "'x'"):
        assert secret not in str(error.value)


def test_a_component_without_a_principal_is_told_how_to_get_one() -> None:
    kafka = KafkaSettings.model_validate(
        {
            "security": {
                "protocol": "SASL_SSL",
                "principals": {"feed": {"username": "f", "password": "p"}},
            }
        }
    )
    with pytest.raises(ConfigError, match="no Kafka principal for the store") as error:
        kafka.client_config("store")
    assert "kafka.security.principals.store" in error.value.fix


def test_security_values_from_the_environment_stay_strings(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        {},
        environ={
            "STREAMFOLIO_KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
            "STREAMFOLIO_KAFKA__SECURITY__USERNAME": "007",
            "STREAMFOLIO_KAFKA__SECURITY__PASSWORD": "0012345",
        },
    )
    config = settings.kafka.client_config("feed")
    assert (config["sasl.username"], config["sasl.password"]) == ("007", "0012345")


def test_local_cluster_port_ranges_must_not_overlap() -> None:
    with pytest.raises(ConfigError, match="falls in the port range") as error:
        settings_from_mapping(
            {
                "kafka": {"local": {"brokers": 3, "port": 19092, "controller_port": 19093}},
                "portfolios": PORTFOLIOS,
            }
        )
    assert error.value.key.startswith("kafka.local")
    ok = settings_from_mapping(
        {
            "kafka": {
                "local": {
                    "brokers": 3,
                    "port": 19092,
                    "internal_port": 19192,
                    "controller_port": 19292,
                }
            },
            "portfolios": PORTFOLIOS,
        }
    )
    assert ok.kafka.local.brokers == 3
