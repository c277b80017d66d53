"""The job through a broker outage (#13): it says so once, does not flood, stops on SIGTERM.

A private broker, ``streamfolio job run`` as a process in its own session (the tests' process
mode: Python workers of its own), the broker killed with SIGKILL once the job has completed a
checkpoint (every task running). The job's output must hold the outage line once and little
else, and Flink's log none of the Kafka clients' per-attempt INFO lines; then SIGTERM to the
job's pid alone must leave nothing of its process group (the Flink JVM and its Python workers
included) within 5 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfolio.flink.runtime import latest_checkpoint
from streamfolio.kafka.admin import topic_specs

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("flink_jars")]
ROOT = Path(__file__).resolve().parents[2]
KafkaBroker = Any  # tests/integration/conftest.py
START_TIMEOUT_S = float(os.environ.get("STREAMFOLIO_TEST_JOB_TIMEOUT", "120"))
OUTAGE_S = 15.0
FLOOD_LINES = 30
"""Lines the job may add to its output during the outage."""
STOP_S = 5.0


def _config(broker: KafkaBroker, tmp: Path) -> Path:
    data = yaml.safe_load(broker.config_path.read_text(encoding="utf-8"))
    data["flink"] = {
        **data.get("flink", {}),
        "checkpoint_dir": str(tmp / "checkpoints"),
        "checkpoint_interval_ms": 1_000,  # the first one says the job runs
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _start_job(config: Path, tmp: Path) -> subprocess.Popen[bytes]:
    (tmp / "flink-log").mkdir()
    env = {
        **os.environ,
        # PyFlink's thread mode hangs at start-up about once in thirty runs (docs/flink.md).
        "STREAMFOLIO_FLINK_PYTHON_MODE": "process",
        "FLINK_LOG_DIR": str(tmp / "flink-log"),  # not the one shared by every local run
    }
    with (tmp / "job.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streamfolio.cli", "job", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def _lines(tmp: Path) -> list[str]:
    return (tmp / "job.log").read_text(encoding="utf-8", errors="replace").splitlines()


def _group_alive(job: subprocess.Popen[bytes]) -> bool:
    """Whether a process of the job's group still runs. Zombies do not: the job's children
    exit after it, are handed to the machine's init, and wait there to be reaped (seen here:
    a `python` and a `tee` of the group, state Z, past the 5 s). The group is looked at before
    the job is reaped: the other order could see it run, then exit, and not reap it."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        state, group = fields[0], int(fields[2])
        if group == job.pid and state not in ("Z", "X"):
            return True
    job.wait(5)  # it has exited (a zombie at most): reap it, for its return code
    return False


def _members(pgid: int) -> str:
    listing = subprocess.run(
        ["ps", "-o", "pid=,stat=,args=", "-g", str(pgid)], capture_output=True, text=True
    )
    return "\n".join(line[:160] for line in listing.stdout.splitlines())


def test_the_job_reports_an_outage_once_and_stops_on_sigterm_within_5_s(
    local_kafka_factory: Callable[[], KafkaBroker], tmp_path: Path
) -> None:
    broker = local_kafka_factory()
    broker.local.up(topic_specs(broker.settings), timeout=120)
    job = _start_job(_config(broker, tmp_path), tmp_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while latest_checkpoint(tmp_path / "checkpoints") is None:
            assert job.poll() is None, "\n".join(_lines(tmp_path)[-40:])
            assert time.monotonic() < deadline, "no checkpoint: the job did not start"
            time.sleep(0.5)
        before = len(_lines(tmp_path))

        pid = broker.local.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        said_after: float | None = None
        while time.monotonic() - killed < OUTAGE_S:
            if said_after is None and any("Kafka unreachable" in x for x in _lines(tmp_path)):
                said_after = time.monotonic() - killed
            time.sleep(0.5)
        during = _lines(tmp_path)[before:]
        assert job.poll() is None, "\n".join(during[-40:])
        said = [line for line in during if "Kafka unreachable" in line]
        assert len(said) == 1, "\n".join(during[-40:])
        assert said[0].startswith("job: Kafka unreachable"), said[0]
        assert len(during) < FLOOD_LINES, "\n".join(during[-40:])
        flink_log = "".join(
            p.read_text(errors="replace") for p in (tmp_path / "flink-log").iterdir()
        )
        assert "Rebootstrapping" not in flink_log  # held at WARN: gateway.QUIET_LOGGERS

        asked = time.monotonic()
        job.send_signal(signal.SIGTERM)  # the pid alone, not its group
        while _group_alive(job) and time.monotonic() - asked < STOP_S:
            time.sleep(0.05)
        took = time.monotonic() - asked
        assert not _group_alive(job), f"alive after {took:.1f} s:\n{_members(job.pid)}"
        assert job.returncode == 0
        assert "stopped; checkpoints are retained" in _lines(tmp_path)[-1]
        print(f"outage said after {said_after:.1f} s; {len(during)} lines; stopped in {took:.2f} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(10)
