"""The job through a broker outage, without a broker: restart strategy, client back-off, the
driver's broker probe, SIGTERM, and stopping the gateway JVM (issue 13)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamfolio.cli_support import stop_signals
from streamfolio.config import Settings, settings_from_mapping
from streamfolio.flink import driver, gateway
from streamfolio.flink.cli import job_app
from streamfolio.flink.connectors import client_properties, sink_options
from streamfolio.flink.runtime import JobOptions, flink_configuration
from streamfolio.kafka.outage import BrokerWatch
from streamfolio.kafka.outage import log as outage_log

SETTINGS = settings_from_mapping(
    {
        "portfolios": [{"id": "a", "tickers": ["X"]}],
        "kafka": {"security": {"protocol": "SSL"}},
    }
)


def _seconds(value: str) -> float:
    number, unit = value.split()
    return float(number) * {"ms": 0.001, "s": 1, "min": 60}[unit]


def test_the_restart_strategy_outlasts_a_quarter_hour_outage_but_not_a_bug() -> None:
    conf = flink_configuration(SETTINGS, JobOptions.from_settings(SETTINGS), [])
    assert not [k for k in conf if k.startswith("restart-strategy.fixed-delay")]
    assert conf["restart-strategy.type"] == "exponential-delay"
    prefix = "restart-strategy.exponential-delay."
    initial = _seconds(conf[prefix + "initial-backoff"])
    cap = _seconds(conf[prefix + "max-backoff"])
    multiplier = float(conf[prefix + "backoff-multiplier"])
    jitter = float(conf[prefix + "jitter-factor"])
    attempts = int(conf[prefix + "attempts-before-reset-backoff"])
    assert (initial, cap, multiplier, jitter) == (1, 30, 2, 0.1)
    assert _seconds(conf[prefix + "reset-backoff-threshold"]) == 600
    backoffs = [min(initial * multiplier**n, cap) for n in range(attempts)]
    # Even if every restart failed at once, with every back-off at the jitter's low end...
    assert sum(backoffs) * (1 - jitter) >= 15 * 60
    # ...while a failure that recurs for good still ends the job within the hour.
    assert sum(backoffs) * (1 + jitter) < 60 * 60
    # Outage failures are in the sinks' synchronous checkpoint part: none is tolerated anyway.
    assert conf["execution.checkpointing.tolerable-failed-checkpoints"] == "0"


def test_every_kafka_client_of_the_job_backs_off_up_to_ten_seconds() -> None:
    properties = client_properties(SETTINGS)
    assert properties["reconnect.backoff.ms"] == "100"
    assert properties["reconnect.backoff.max.ms"] == "10000"
    assert properties["security.protocol"] == "SSL"
    for delivery in ("at-least-once", "exactly-once"):
        options = sink_options(
            SETTINGS, "metrics", keyed=True, delivery=delivery, transactional_id_prefix="p"
        )
        assert options["properties.reconnect.backoff.ms"] == "100"
        assert options["properties.reconnect.backoff.max.ms"] == "10000"
        assert options["sink.delivery-guarantee"] == delivery  # guarantees unchanged


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_probe_reports_an_outage_once_then_once_a_minute_then_its_end() -> None:
    now = [0.0]
    lines = Lines()
    logger = logging.getLogger("test.flink.driver.probe")
    logger.addHandler(lines)
    logger.propagate = False
    watch = BrokerWatch("job", clock=lambda: now[0], logger=logger)
    answers = iter([True] * 3 + [False] * 75 + [True] * 3)  # 2 s apart: 150 s without a broker

    def probe() -> None:
        if not next(answers):
            raise ConnectionRefusedError("Connection refused")

    broker_probe = driver.BrokerProbe(probe, watch, clock=lambda: now[0])
    for _ in range(81):
        broker_probe.round()
        now[0] += 2.0
    assert [line.split(";")[0] for line in lines.lines] == [
        "job: Kafka unreachable (Connection refused)",
        "job: Kafka still unreachable after 1 min 2 s",
        "job: Kafka still unreachable after 2 min 2 s",
        "job: Kafka reachable again after an outage of 2 min 30 s",
    ]
    assert (watch.outages, watch.down) == (1, False)


def test_the_probe_thread_keeps_probing_until_stopped() -> None:
    watch = BrokerWatch("job", logger=None, grace_s=0)
    calls: list[float] = []

    def refused() -> None:
        calls.append(time.monotonic())
        raise ConnectionRefusedError("refused")

    broker_probe = driver.BrokerProbe(refused, watch, interval_s=0.01).start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    broker_probe.stop(timeout_s=1)
    assert watch.down and len(calls) >= 3
    stopped_at = len(calls)
    time.sleep(0.05)
    assert len(calls) == stopped_at


def test_sigterm_interrupts_like_ctrl_c_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), stop_signals():  # what `job run` stops on
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted at once
    assert signal.getsignal(signal.SIGTERM) is before


def _child(code: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # started, handlers in place
    return process


def test_the_gateway_is_terminated_and_killed_if_it_lingers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    polite = _child("import time; print(flush=True); time.sleep(60)")
    stubborn = _child(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(flush=True); time.sleep(60)"
    )
    monkeypatch.setattr(gateway, "_gateways", [polite, stubborn])
    started = time.monotonic()
    try:
        gateway.stop_gateway(timeout_s=1.0)
    finally:
        for process in (polite, stubborn):
            assert process.stdout is not None
            process.stdout.close()
    assert time.monotonic() - started < 4
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL


def test_the_jvm_logs_no_rebootstrap_chatter_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "_scratch", [])
    env = {"FLINK_CONF_DIR": str(tmp_path)}
    gateway._quiet_kafka_logs(env)
    pyflink_own, quiet = env["LOG4J_PROPERTIES"].split(",")
    assert pyflink_own == str(tmp_path / "log4j-cli.properties")
    text = Path(quiet).read_text(encoding="utf-8")
    for name in gateway.QUIET_LOGGERS:
        assert f".name = {name}\n" in text
    gateway.stop_gateway()  # no JVM: only the scratch file goes
    assert not Path(quiet).exists()
    mine = {"FLINK_CONF_DIR": str(tmp_path), "LOG4J_PROPERTIES": "/etc/mine.properties"}
    gateway._quiet_kafka_logs(mine)
    assert mine["LOG4J_PROPERTIES"] == "/etc/mine.properties"


@pytest.fixture
def outage_logging() -> Iterator[None]:
    """Undo what ``job run`` does to the logging of this process."""
    handlers, propagate = list(outage_log.handlers), outage_log.propagate
    root_filters = list(logging.getLogger().filters)
    yield
    outage_log.handlers[:] = handlers
    outage_log.propagate = propagate
    logging.getLogger().filters[:] = root_filters


@pytest.mark.usefixtures("outage_logging")
def test_outage_lines_go_to_stderr_whatever_holds_the_root_logger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    elsewhere = Lines()  # as Beam's handler, which ships records to the JVM's log file
    root.addHandler(elsewhere)
    try:
        driver.outages_to_stderr()
        driver.outages_to_stderr()  # once is enough
        outage_log.warning("job: Kafka unreachable (test)")
        root.error("KeyboardInterrupt while sending command.")
    finally:
        root.removeHandler(elsewhere)
    assert capsys.readouterr().err == "job: Kafka unreachable (test)\n"
    assert elsewhere.lines == []


@pytest.mark.usefixtures("outage_logging")
def test_job_run_stops_on_sigterm_with_the_probe_and_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"portfolios": [{"id": "a", "tickers": ["X"]}]}))
    done: list[str] = []

    def run_until_signalled(argv: list[str]) -> int:
        assert argv == ["--config", str(config)]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted at once
        return 0

    monkeypatch.setattr("streamfolio.flink.job.main", run_until_signalled)

    def fake_probe(settings: Settings) -> driver.Probe:
        done.append(f"probe {settings.kafka.bootstrap_servers}")
        return lambda: None

    monkeypatch.setattr(driver, "metadata_probe", fake_probe)
    monkeypatch.setattr(gateway, "track_gateway", lambda: done.append("tracked"))
    monkeypatch.setattr(gateway, "stop_gateway", lambda: done.append("stopped"))
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(job_app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "stopped; checkpoints are retained" in result.output
    assert done == ["tracked", "probe localhost:9092", "stopped"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_jobs_login_module_is_the_one_the_connector_jar_ships() -> None:
    # flink-sql-connector-kafka relocates the Kafka client: the plain class name is not found
    # there ("No LoginModule found for org.apache.kafka...ScramLoginModule").
    settings = settings_from_mapping(
        {
            "portfolios": [{"id": "a", "tickers": ["X"]}],
            "kafka": {
                "security": {"protocol": "SASL_PLAINTEXT", "username": "job", "password": "p"}
            },
        }
    )
    jaas = client_properties(settings)["sasl.jaas.config"]
    assert jaas.startswith(
        "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule "
    )
    assert jaas.endswith('required username="job" password="p";')
