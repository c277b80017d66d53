"""A broker outage is logged once when it starts, at most once a minute, once when it ends."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from streamfolio.errors import StreamfolioError
from streamfolio.kafka.outage import BrokerWatch, close_within, observed


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _stats(*states: str) -> str:
    brokers = {
        f"b{i}": {"state": s, "nodeid": i, "source": "learned"} for i, s in enumerate(states)
    }
    brokers[":0/internal"] = {"state": "UP", "nodeid": -1, "source": "internal"}
    return json.dumps({"name": "client#1", "brokers": brokers})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stops() -> list[int]:
    """The stop requests of the watch (a real one sends SIGTERM to its process)."""
    return []


@pytest.fixture
def watch(clock: Clock, tmp_path: Path, stops: list[int]) -> BrokerWatch:
    return BrokerWatch(
        "store",
        clock=clock,
        logger=logging.getLogger("test.outage"),
        status_path=tmp_path / "store.status",
        on_refused=lambda: stops.append(1),
    )


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.outage"]


def test_an_hour_long_outage_is_three_kinds_of_line_not_a_flood(
    watch: BrokerWatch, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    watch.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    for second in range(1, 3600):  # statistics every second, every attempt failing
        clock.now = float(second)
        watch.on_error(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
        watch.on_statistics(_stats("DOWN"))
    clock.now = 3600.0
    watch.on_statistics(_stats("UP"))
    lines = _lines(caplog)
    assert lines[0].startswith("store: Kafka unreachable (no broker answers)")
    assert "nothing is lost" in lines[0]
    still = [line for line in lines if "still unreachable" in line]
    assert 58 <= len(still) <= 60
    assert still[0] == "store: Kafka still unreachable after 1 min 2 s; waiting"
    assert lines[-1] == "store: Kafka reachable again after an outage of 60 min 0 s; resuming"
    assert len(lines) == len(still) + 2
    assert watch.outages == 1 and not watch.down


def test_a_blip_shorter_than_the_grace_period_is_not_an_outage(
    watch: BrokerWatch, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    watch.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    clock.now = 1.0
    watch.on_statistics(_stats("DOWN"))
    watch.on_statistics(_stats("DOWN", "UP"))  # another broker, or the reconnect
    clock.now = 10.0
    watch.tick()
    assert _lines(caplog) == [] and watch.outages == 0


def test_the_internal_broker_does_not_count_as_reachable(watch: BrokerWatch, clock: Clock) -> None:
    watch.lost("1/1 brokers are down")
    clock.now = 5.0
    watch.on_statistics(_stats("TRY_CONNECT"))
    assert watch.down
    assert watch.outage_s == pytest.approx(5.0)


def test_the_status_file_follows_the_outage(
    watch: BrokerWatch, clock: Clock, tmp_path: Path
) -> None:
    status = tmp_path / "store.status"
    assert json.loads(status.read_text())["state"] == "running"
    watch.lost("down")
    clock.now = 3.0
    watch.tick()
    assert json.loads(status.read_text())["state"] == "waiting for the broker"
    watch.reached()
    assert json.loads(status.read_text())["state"] == "running"


def test_other_errors_are_logged_once_each(
    watch: BrokerWatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(5):
        watch.on_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed"))
    assert _lines(caplog) == ["Kafka reports not allowed; further ones are only counted"]
    assert watch.errors["TOPIC_AUTHORIZATION_FAILED"] == 5 and not watch.down


def test_refused_credentials_stop_the_component_once_with_what_to_fix(
    watch: BrokerWatch, caplog: pytest.LogCaptureFixture, stops: list[int], tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    for code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        watch.on_error(KafkaError(code, "SASL authentication error: Authentication failed"))
    (line,) = _lines(caplog)
    assert line.startswith("store: Kafka refused its credentials (SASL authentication error")
    assert "fix kafka.security" in line
    assert stops == [1] and not watch.down
    assert watch.refused == "SASL authentication error: Authentication failed"
    assert "refused" in (tmp_path / "store.status").read_text()


def test_librdkafka_connection_attempts_are_counted_not_logged(watch: BrokerWatch) -> None:
    failed = logging.LogRecord(
        "x", logging.ERROR, "", 0, "%s [%s] %s", ("FAIL", "c#1", "refused"), None
    )
    other = logging.LogRecord(
        "x", logging.WARNING, "", 0, "%s [%s] %s", ("SESSTMOUT", "c#1", "t"), None
    )
    assert watch.filter(failed) is False and watch.filter(other) is True
    assert watch.attempts_failed == 1


def test_observed_keeps_the_clients_settings_and_adds_the_callbacks() -> None:
    config = observed({"bootstrap.servers": "b:9092", "reconnect.backoff.max.ms": 5000})
    assert config["bootstrap.servers"] == "b:9092"
    assert config["reconnect.backoff.max.ms"] == 5000  # a setting given wins
    assert callable(config["error_cb"]) and callable(config["stats_cb"])
    assert config["statistics.interval.ms"] == 1000


def test_close_within_gives_up_on_a_close_that_waits_for_the_broker() -> None:
    release = threading.Event()
    started = time.monotonic()
    assert close_within(lambda: release.wait(30), 0.2) is False
    assert time.monotonic() - started < 2
    release.set()
    assert close_within(lambda: None, 1.0) is True


@pytest.mark.parametrize(
    "stop", [KeyboardInterrupt, None, StreamfolioError("cannot start transactions: timed out")]
)
def test_a_command_whose_credentials_were_refused_exits_as_on_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stop: type | BaseException | None,
) -> None:
    import typer

    from streamfolio import cli_support
    from streamfolio.kafka import outage

    refused = BrokerWatch("feed", logger=None, on_refused=lambda: None)
    refused.refuse("Authentication failed")
    monkeypatch.setattr(outage, "_watch", refused)
    with pytest.raises(typer.Exit) as exited, cli_support.command_errors():
        if stop is not None:
            raise stop  # the stop the watch asked for, or what failed after the refusal
    assert exited.value.exit_code == 2
    err = capsys.readouterr().err
    assert "Kafka refused the credentials (Authentication failed)" in err
    assert "timed out" not in err
