"""The feed and a broker killed under it (issue 13): SIGTERM stops it within 5 s, nothing lost.

A simulated feed runs as a process against a private broker; the broker is killed with SIGKILL;
during the outage the feed gets SIGTERM. It must be gone within 5 s, having logged the outage
once (no flood of connection failures) and kept what the broker had not acknowledged in its
spool file. With the broker started again on the same data, a second run publishes that file
first: afterwards every tick the first run accepted is on the prices topic.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfolio.config import Settings
from streamfolio.feeds.run import feed_spool_path
from streamfolio.kafka.admin import topic_specs
from streamfolio.kafka.clients import RecordConsumer
from streamfolio.kafka.topics import contract
from streamfolio.kafka.unsent import UnsentFile
from streamfolio.serde import is_heartbeat

KafkaBroker = Any  # tests/integration/conftest.py

pytestmark = pytest.mark.integration

FIRST_START = "2026-10-01T09:30:00Z"
SECOND_START = "2026-11-02T09:30:00Z"  # the second run's ticks are later than every first one
SECOND_START_MS = 1_793_611_800_000
STOP_WITHIN_S = 5.0


class Feed:
    """``streamfolio feed`` as a process in a session of its own; its output read as it comes."""

    def __init__(self, config: Path, cwd: Path, *args: str) -> None:
        command = [sys.executable, "-m", "streamfolio.cli", "feed", *args, "--config", str(config)]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, f"the feed ended:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def _config(broker: KafkaBroker, tmp_path: Path) -> Path:
    data = yaml.safe_load(broker.config_path.read_text())
    data["feed"] = {**data.get("feed", {}), "spool_dir": str(tmp_path / "spool")}
    path = tmp_path / "feed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _first_run_ticks(settings: Settings) -> set[tuple[int, str, float]]:
    """The distinct ticks on the prices topic stamped before the second run's start."""
    found: set[tuple[int, str, float]] = set()
    with RecordConsumer(
        settings.kafka,
        [contract(settings, "prices")],
        component="admin",
        group_id=f"t-{uuid.uuid4().hex}",
        from_beginning=True,
        assign_all=True,
    ) as consumer:
        for item in consumer.records(timeout=10):
            if is_heartbeat(item.value) or item.record is None:
                continue
            tick = item.record
            if tick["event_time"] < SECOND_START_MS:
                found.add((tick["event_time"], tick["ticker"], tick["price"]))
    return found


def test_feed_stopped_during_an_outage_keeps_its_ticks_for_the_next_run(
    local_kafka_factory: Callable[[], KafkaBroker], tmp_path: Path
) -> None:
    broker = local_kafka_factory()
    broker.local.up(topic_specs(broker.settings), timeout=120)
    config = _config(broker, tmp_path)
    sim = ("--source", "sim", "--rate", "100", "--seed", "11")
    first = Feed(config, tmp_path, *sim, "--start", FIRST_START)
    try:
        first.wait_for("feed sim: publishing", timeout=60)
        time.sleep(3)
        pid = broker.local.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        first.wait_for("Kafka unreachable", timeout=30)  # after the watch's 2 s grace
        time.sleep(3)  # the feed goes on accepting ticks while the broker is away
        asked = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        code = first.finish(timeout=30)
        took = time.monotonic() - asked
    finally:
        first.kill()
    output = first.output
    assert code == 0, output
    assert took < STOP_WITHIN_S, f"gone {took:.1f} s after SIGTERM:\n{output}"

    # The outage logged once, readably, and no flood of per-attempt connection failures.
    outage = [line for line in first.lines if "Kafka unreachable" in line]
    assert len(outage) == 1, output
    assert " WARNING streamfolio.outage: feed: Kafka unreachable" in outage[0], output
    assert not [line for line in first.lines if "Connection refused" in line and "FAIL" in line]
    assert len(first.lines) < 25, f"a flood:\n{output}"

    last = first.lines[-1]
    stopped = re.fullmatch(
        r"feed stopped: (\d+) ticks published .*, (\d+) unacknowledged kept for the next run", last
    )
    assert stopped, output
    published, kept = int(stopped[1]), int(stopped[2])
    settings = broker.settings.model_copy(
        update={"feed": broker.settings.feed.model_copy(update={"spool_dir": tmp_path / "spool"})}
    )
    spool = UnsentFile(feed_spool_path(settings))
    assert len(spool.read()) == kept > 0, output

    broker.local.up(topic_specs(broker.settings), timeout=120)  # on the same data
    second = Feed(config, tmp_path, *sim, "--start", SECOND_START, "--max-ticks", "50")
    try:
        code = second.finish(timeout=120)
    finally:
        second.kill()
    assert code == 0, second.output
    assert f"republished {kept} message(s) kept from the last run" in second.lines, second.output
    assert not spool.exists()

    ticks = _first_run_ticks(broker.settings)
    # A tick interrupted by the stop between its produce call and its count is kept too.
    assert published <= len(ticks) <= published + 1, (published, len(ticks), output)
