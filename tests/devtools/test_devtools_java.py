"""Finding Java, with fake ``java`` executables; the translation of tool errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streamfolio.devtools import ToolError, reraise_as
from streamfolio.devtools.java import find_java
from streamfolio.errors import StreamfolioError
from streamfolio.kafka.local import LocalKafkaError
from streamfolio.kafka.local import find_java as kafka_java


def _java_home(tmp_path: Path, version: str) -> Path:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-01-01' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def test_java_home_is_taken_and_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_java_home(tmp_path, "21.0.2")))
    assert find_java(17, purpose="run Kafka") == str(tmp_path / "bin" / "java")
    with pytest.raises(ToolError, match=r"is Java 21; Java 25\+ is needed to run X"):
        find_java(25, purpose="run X")


def test_no_java_says_how_to_install_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(ToolError, match=r"Java 17\+ is needed to run Kafka and none was found"):
        find_java(17, purpose="run Kafka")


def test_the_kafka_broker_reports_a_local_kafka_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_java_home(tmp_path, "1.8.0_392")))
    with pytest.raises(LocalKafkaError, match=r"is Java 8; Java 17\+ is needed to run Kafka"):
        kafka_java()


def test_reraise_as_keeps_the_message_and_other_errors() -> None:
    class MineError(StreamfolioError): ...

    with pytest.raises(MineError, match=r"^gone$"), reraise_as(MineError):
        raise ToolError("gone")
    with pytest.raises(KeyError), reraise_as(MineError):
        raise KeyError("x")
