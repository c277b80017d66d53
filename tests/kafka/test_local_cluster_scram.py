"""SCRAM users of a secured local cluster: random password files made once, one user per
principal, and format arguments that carry a salted password, never the password. No JVM."""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from streamfolio.config import KafkaSecurity
from streamfolio.errors import ConfigError
from streamfolio.kafka.local.install import LocalKafkaError
from streamfolio.kafka.local.scram import (
    ITERATIONS,
    ScramUser,
    ensure_password_files,
    format_arguments,
    salted_password,
    scram_users,
)


def _security(tmp_path: Path, **extra: Any) -> KafkaSecurity:
    principals = {
        "admin": {"username": "admin", "password_file": str(tmp_path / "s" / "admin.password")},
        "feed": {"username": "feed", "password_file": str(tmp_path / "s" / "feed.password")},
        "store": {"username": "store", "password": "inline-secret"},
    }
    return KafkaSecurity.model_validate({"protocol": "SASL_SSL", "principals": principals, **extra})


def test_missing_password_files_get_a_random_password_once(tmp_path: Path) -> None:
    security = _security(tmp_path)
    created = ensure_password_files(security)
    assert created == ["kafka.security.principals.admin", "kafka.security.principals.feed"]
    admin = tmp_path / "s" / "admin.password"
    feed = tmp_path / "s" / "feed.password"
    assert stat.S_IMODE(admin.stat().st_mode) == 0o600
    first = admin.read_text()
    assert len(first.strip()) >= 32 and first != feed.read_text()
    assert ensure_password_files(security) == []  # kept afterwards
    assert admin.read_text() == first


def test_users_are_the_principals_with_their_passwords(tmp_path: Path) -> None:
    security = _security(tmp_path, username="app", password="app-secret")
    ensure_password_files(security)
    users = scram_users(security)
    assert [u.username for u in users] == ["admin", "app", "feed", "store"]
    by_name = {u.username: u.password for u in users}
    assert by_name["feed"] == (tmp_path / "s" / "feed.password").read_text().strip()
    assert by_name["store"] == "inline-secret"
    assert "inline-secret" not in repr(users)


def test_one_user_for_two_components_needs_one_password(tmp_path: Path) -> None:
    shared = {"username": "svc", "password": "a"}
    security = KafkaSecurity.model_validate(
        {"protocol": "SASL_SSL", "principals": {"store": shared, "dashboard": shared}}
    )
    assert [u.username for u in scram_users(security)] == ["svc"]
    clash = KafkaSecurity.model_validate(
        {
            "protocol": "SASL_SSL",
            "principals": {"store": shared, "dashboard": {"username": "svc", "password": "b"}},
        }
    )
    with pytest.raises(ConfigError, match="different passwords"):
        scram_users(clash)


def test_a_username_scram_would_escape_is_refused() -> None:
    security = KafkaSecurity.model_validate(
        {"protocol": "SASL_SSL", "principals": {"feed": {"username": "a,b", "password": "x"}}}
    )
    with pytest.raises(ConfigError, match=r"principals\.feed\.username"):
        scram_users(security)


def test_format_arguments_carry_a_salted_password_not_the_password() -> None:
    users = [ScramUser("feed", "s3cret-pass"), ScramUser("job", "other-pass")]
    arguments = format_arguments(users, "SCRAM-SHA-512")
    assert arguments[0::2] == ["--add-scram", "--add-scram"]
    assert not any("s3cret-pass" in a or "other-pass" in a for a in arguments)
    pattern = re.compile(
        r'SCRAM-SHA-512=\[name="(\w+)",iterations=(\d+),salt="([^"]+)",saltedpassword="([^"]+)"\]'
    )
    match = pattern.fullmatch(arguments[1])
    assert match is not None
    name, iterations, salt, salted = match.groups()
    assert (name, int(iterations)) == ("feed", ITERATIONS)
    expected = salted_password("s3cret-pass", base64.b64decode(salt), "SCRAM-SHA-512", ITERATIONS)
    assert base64.b64decode(salted) == expected
    assert len(expected) == 64  # SHA-512


def test_plain_users_are_not_made() -> None:
    with pytest.raises(LocalKafkaError, match="SCRAM-SHA-256 or SCRAM-SHA-512"):
        format_arguments([ScramUser("feed", "x")], "PLAIN")
