"""``job submit --execute --follow``: the follower's handling of the job's states against a
stand-in REST client (no cluster), and the command itself against a stand-in REST API and a
stand-in ``flink run`` (a shell script): the job id, state changes, exit 1 with the reason
when the job ends, and a SIGTERM that cancels the job and exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import example_config_path
from streamfolio.flink.cluster import JobInfo, RestError
from streamfolio.flink.cluster.follow import (
    UNANSWERED_LIMIT_S,
    StatusFile,
    cancel_submitted,
    follow_job,
    status_text,
)
from streamfolio.flink.connectors import EVENT_TIME_JAR, JARS_ENV

JOB = "0123456789abcdef0123456789abcdef"
runner = CliRunner()


class StandInRest:
    """Answers the job's states from a script, one per call (the last one repeats); an
    exception in the script is raised instead. Records cancellations."""

    def __init__(self, *states: str | Exception, listed: list[JobInfo] | None = None) -> None:
        self.script: list[str | Exception] = list(states)
        self.cancelled: list[str] = []
        self.listed = listed or []

    def job_state(self, job_id: str) -> str:
        assert job_id == JOB or job_id in {j.id for j in self.listed}
        state = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(state, Exception):
            raise state
        return "CANCELED" if self.cancelled and state == "RUNNING" else state

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def jobs(self) -> list[JobInfo]:
        return self.listed


class Clock:
    """A clock the stand-in sleep moves; ``stop_after``: a Ctrl-C after that many sleeps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.stop_after = stop_after

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        if self.stop_after is not None and self.sleeps == self.stop_after:
            raise KeyboardInterrupt


def _follow(rest: StandInRest, clock: Clock, **kwargs: Any) -> tuple[int, list[str]]:
    said: list[str] = []
    code = follow_job(JOB, rest, said.append, clock=clock, sleep=clock.sleep, **kwargs)
    return code, said


def test_the_follower_stays_while_the_job_lives_and_says_each_change_once() -> None:
    rest = StandInRest(
        "CREATED", "STARTING", "RUNNING", "RUNNING", "RESTARTING", "RUNNING", "FINISHED"
    )
    code, said = _follow(rest, Clock())
    assert code == 1
    states = ["CREATED", "STARTING", "RUNNING", "RESTARTING", "RUNNING", "FINISHED"]
    assert said == [f"job {JOB}: {s}" for s in states] + [f"job {JOB} ended FINISHED"]
    assert rest.cancelled == []


def test_a_failed_job_exits_1_with_its_reason() -> None:
    rest = StandInRest("RUNNING", "FAILED")
    code, said = _follow(rest, Clock(), reason=lambda job: f"{job[:4]}: TaskManager lost")
    assert code == 1
    assert said[-1] == f"job {JOB} ended FAILED: 0123: TaskManager lost"


@pytest.mark.parametrize("ended", ["CANCELED", "SUSPENDED"])
def test_a_job_cancelled_elsewhere_ends_the_follower(ended: str) -> None:
    code, said = _follow(StandInRest("RUNNING", ended), Clock())
    assert code == 1 and said[-1] == f"job {JOB} ended {ended}"


def test_a_stop_cancels_the_job_waits_for_it_and_exits_0() -> None:
    rest = StandInRest("RUNNING")
    code, said = _follow(rest, Clock(stop_after=3))
    assert code == 0
    assert rest.cancelled == [JOB]
    assert said[-1].startswith(f"stopping: cancelled job {JOB} (CANCELED); its checkpoints stay")


def test_a_stop_after_the_job_ended_cancels_nothing() -> None:
    rest = StandInRest("RUNNING", "FAILED")
    clock = Clock(stop_after=1)  # the stop comes before the follower saw FAILED
    code, said = _follow(rest, clock)
    assert code == 0 and rest.cancelled == []
    assert said[-1] == f"stopping: job {JOB} had ended already"


def test_a_cluster_that_stops_answering_is_given_up_after_the_limit() -> None:
    gone = RestError("no answer from the Flink REST API at http://localhost:8081/jobs/x")
    brief = StandInRest("RUNNING", gone, gone, "RUNNING", "FINISHED")
    code, said = _follow(brief, Clock())
    assert code == 1 and said[-1] == f"job {JOB} ended FINISHED", "a short silence is waited out"
    assert sum("its state is unknown" in line for line in said) == 1

    code, said = _follow(StandInRest("RUNNING", gone), Clock())
    assert code == 1
    assert said[-1].startswith(f"job {JOB}: the cluster has not said its state for ")
    assert said[-1].endswith("giving up on it")
    assert int(said[-1].split(" for ")[1].split(" s")[0]) >= UNANSWERED_LIMIT_S


def test_the_status_file_says_what_the_job_does(tmp_path: Path) -> None:
    path = tmp_path / "job.status"
    seen: list[str] = []

    class Watching(StandInRest):
        def job_state(self, job_id: str) -> str:
            if path.exists():
                seen.append(json.loads(path.read_text())["state"])
            return super().job_state(job_id)

    _follow(
        Watching("CREATED", "RUNNING", "RESTARTING", "FAILED"), Clock(), status=StatusFile(path)
    )
    assert seen == [
        "waiting for slots on the Flink cluster",
        "running",
        "restarting on the Flink cluster",
    ]
    record = json.loads(path.read_text())
    assert record["state"] == status_text("FAILED") and record["pid"] == os.getpid()


def test_a_stop_while_submitting_cancels_what_the_submission_started() -> None:
    def job(id_: str, state: str, start: int, name: str = "streamfolio") -> JobInfo:
        return JobInfo(id_, name, state, start)

    listed = [
        job("ours", "RUNNING", 1_000),
        job("earlier", "RUNNING", 999),  # started before the submission: someone else's
        job("other-name", "RUNNING", 1_000, name="not-ours"),
        job("ended", "CANCELED", 1_001),
    ]
    rest = StandInRest("RUNNING", listed=listed)
    said: list[str] = []
    assert cancel_submitted(rest, 1_000, said.append, sleep=lambda _s: None) == ["ours"]
    assert rest.cancelled == ["ours"]
    assert said == ["stopped while submitting; cancelled job(s) ours it had started"]


# ----------------------------------------------------------------------- the command itself


class FakeFlink:
    """The stand-in REST API: the job's states in turn (the last repeats), its exceptions,
    and what it was asked."""

    def __init__(self) -> None:
        self.states = ["RUNNING"]
        self.requests: list[tuple[str, str]] = []
        self.cancelled = threading.Event()

    def answer(self, method: str, path: str) -> tuple[int, Any]:
        self.requests.append((method, path))
        if path == f"/jobs/{JOB}?mode=cancel":
            self.cancelled.set()
            return 202, {}
        if path == f"/jobs/{JOB}":
            if self.cancelled.is_set():
                return 200, {"state": "CANCELED", "vertices": []}
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return 200, {"state": state, "vertices": [{"status": "RUNNING"}]}
        if path == f"/jobs/{JOB}/exceptions":
            entry = {"exceptionName": "x", "stacktrace": "java.io.IOException: disk full\n\tat y"}
            return 200, {"exceptionHistory": {"entries": [entry]}}
        return 404, {"errors": ["Not found: " + path]}


@pytest.fixture
def flink() -> Iterator[tuple[FakeFlink, str]]:
    fake = FakeFlink()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            code, data = fake.answer(self.command, self.path)
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PATCH = _reply  # noqa: N815 (http.server's names)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    """The environment of a ``job submit`` whose ``flink run`` only says a job id, with
    stand-in jars (nothing fetched)."""
    home = tmp_path / "flink-home"
    (home / "bin").mkdir(parents=True)
    flink = home / "bin" / "flink"
    flink.write_text(f"#!/bin/sh\necho 'Job has been submitted with JobID {JOB}'\n")
    flink.chmod(0o755)
    jars = tmp_path / "jars"
    jars.mkdir()
    for name in ("flink-sql-connector-kafka-0.jar", EVENT_TIME_JAR):
        (jars / name).touch()
    return {"FLINK_HOME": str(home), JARS_ENV: str(jars)}


def _submit(address: str) -> list[str]:
    config = str(example_config_path())
    return ["job", "submit", "--config", config, "--jobmanager", address, "--execute", "--follow"]


def test_follow_prints_the_job_id_then_exits_1_with_the_reason_it_failed(
    flink: tuple[FakeFlink, str],
    stand_ins: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, address = flink
    fake.states = ["RUNNING", "FAILED"]
    monkeypatch.chdir(tmp_path)  # flink-run.log goes to the working directory
    for name, value in stand_ins.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, _submit(address))
    assert result.exit_code == 1, result.output
    assert result.stdout.strip() == JOB
    assert f"job {JOB}: RUNNING" in result.stderr
    assert f"job {JOB} ended FAILED: java.io.IOException: disk full" in result.stderr
    assert ("PATCH", f"/jobs/{JOB}?mode=cancel") not in fake.requests


def test_follow_needs_execute_and_a_rest_api() -> None:
    config = str(example_config_path())
    result = runner.invoke(app, ["job", "submit", "--config", config, "--follow"])
    assert result.exit_code == 2 and "fix: add --execute" in result.stderr
    target = ["--execute", "--follow", "--target", "kubernetes-application"]
    result = runner.invoke(app, ["job", "submit", "--config", config, *target])
    assert result.exit_code == 2 and "add --jobmanager HOST:PORT" in result.stderr


def test_sigterm_cancels_the_followed_job_and_exits_0(
    flink: tuple[FakeFlink, str], stand_ins: dict[str, str], tmp_path: Path
) -> None:
    fake, address = flink
    follower = subprocess.Popen(
        [sys.executable, "-m", "streamfolio.cli", *_submit(address)],
        env={**os.environ, **stand_ins},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().strip() == JOB  # submitted, and following
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert fake.cancelled.is_set()
    assert f"stopping: cancelled job {JOB} (CANCELED)" in err
