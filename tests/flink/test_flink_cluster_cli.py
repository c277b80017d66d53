"""``streamfolio flink status`` and ``job status | stop | submit --execute`` against a stand-in
for Flink's REST API (a small HTTP server) and a stand-in ``flink run``; no JVM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import example_config_path
from streamfolio.flink.cluster import ClusterStatus, FlinkRest, JobInfo, TaskManagerStatus
from streamfolio.flink.cluster.cli import status_lines
from streamfolio.flink.cluster.processes import ClusterError
from streamfolio.flink.cluster.submit import run_submit
from streamfolio.flink.worker_site.sitecustomize import WORKER_MAIN

JOB = "0123456789abcdef0123456789abcdef"
runner = CliRunner()


class FakeFlink:
    """What the stand-in REST API answers, and what it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.savepoint: dict[str, Any] = {
            "status": {"id": "COMPLETED"},
            "operation": {"location": "file:/sp/savepoint-012345-abc"},
        }
        self.vertices = ["RUNNING", "RUNNING"]

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if path == "/config":
            return 200, {"flink-version": "2.2.1"}
        if path == "/taskmanagers":
            return 200, {"taskmanagers": [{"id": "tm-1", "slotsNumber": 1, "freeSlots": 0}]}
        if path == "/jobs/overview":
            job = {"jid": JOB, "name": "streamfolio", "state": "RUNNING", "start-time": 1}
            return 200, {"jobs": [job]}
        if path == f"/jobs/{JOB}" and method == "GET":
            return 200, {"state": "RUNNING", "vertices": [{"status": s} for s in self.vertices]}
        if path == f"/jobs/{JOB}/stop":
            return 202, {"request-id": "t1"}
        if path == f"/jobs/{JOB}/savepoints/t1":
            return 200, self.savepoint
        if path == f"/jobs/{JOB}?mode=cancel":
            return 202, {}
        return 404, {"errors": ["Not found: " + path]}


@pytest.fixture
def flink() -> Iterator[tuple[FakeFlink, str]]:
    fake = FakeFlink()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, data = fake.answer(self.command, self.path, body)
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = _reply  # noqa: N815 (http.server's names)

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


def test_job_status_lists_the_clusters_jobs(flink: tuple[FakeFlink, str]) -> None:
    _, address = flink
    result = runner.invoke(app, ["job", "status", "--jobmanager", address])
    assert result.exit_code == 0, result.output
    assert f"{JOB}  RUNNING       streamfolio" in result.output
    as_json = runner.invoke(app, ["job", "status", "--jobmanager", address, "--json"])
    assert json.loads(as_json.stdout)[0]["state"] == "RUNNING"


def test_stop_with_a_savepoint_prints_its_path(flink: tuple[FakeFlink, str]) -> None:
    fake, address = flink
    result = runner.invoke(
        app, ["job", "stop", JOB, "--savepoint", "/tmp/sp", "--jobmanager", address]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "/sp/savepoint-012345-abc"  # a path to resume from
    assert "--from-checkpoint /sp/savepoint-012345-abc" in result.stderr
    stop = next(body for method, path, body in fake.requests if path.endswith("/stop"))
    assert stop == {"drain": False, "targetDirectory": "file:///tmp/sp"}


def test_a_failed_savepoint_is_an_error_and_says_why(flink: tuple[FakeFlink, str]) -> None:
    fake, address = flink
    fake.savepoint = {
        "status": {"id": "COMPLETED"},
        "operation": {"failure-cause": {"stack-trace": "java.io.IOException: disk full\nat x"}},
    }
    result = runner.invoke(app, ["job", "stop", JOB, "--savepoint", "--jobmanager", address])
    assert result.exit_code == 1
    assert (
        "error: the savepoint failed (the job keeps running): java.io.IOException: disk full"
        in (result.stderr)
    )
    stop = next(body for method, path, body in fake.requests if path.endswith("/stop"))
    assert stop == {"drain": False}  # the cluster's own savepoint folder


def test_stop_without_savepoint_cancels_and_a_folder_needs_savepoint(
    flink: tuple[FakeFlink, str],
) -> None:
    fake, address = flink
    result = runner.invoke(app, ["job", "stop", JOB, "--jobmanager", address])
    assert result.exit_code == 0, result.output
    assert ("PATCH", f"/jobs/{JOB}?mode=cancel", None) in fake.requests
    wrong = runner.invoke(app, ["job", "stop", JOB, "/tmp/sp", "--jobmanager", address])
    assert wrong.exit_code == 2
    assert "only taken with --savepoint" in wrong.stderr


def test_a_job_is_running_once_every_task_runs(flink: tuple[FakeFlink, str]) -> None:
    fake, address = flink
    rest = FlinkRest(f"http://{address}")
    assert rest.job_state(JOB) == "RUNNING"
    fake.vertices = ["RUNNING", "DEPLOYING"]
    assert rest.job_state(JOB) == "STARTING"
    assert [t.id for t in rest.taskmanagers()] == ["tm-1"]


def test_no_cluster_is_an_error_naming_the_address() -> None:
    result = runner.invoke(app, ["job", "status", "--jobmanager", "localhost:1"])
    assert result.exit_code == 1
    assert "error: no answer from the Flink REST API at http://localhost:1/jobs/overview" in (
        result.stderr
    )


def test_flink_status_of_a_cluster_that_is_not_running(tmp_path: Path) -> None:
    data = yaml.safe_load(example_config_path().read_text(encoding="utf-8"))
    data["flink"]["cluster"] = {"data_dir": str(tmp_path / "cluster"), "rest_port": 1}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(app, ["flink", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"flink: not running (data {tmp_path / 'cluster'})"
    as_json = runner.invoke(app, ["flink", "status", "--config", str(config), "--json"])
    assert json.loads(as_json.stdout)["running"] is False
    down = runner.invoke(app, ["flink", "down", "--config", str(config)])
    assert down.stdout.strip() == "flink was not running"


def test_status_shows_a_taskmanager_that_is_gone() -> None:
    status = ClusterStatus(
        "http://localhost:8081",
        Path("/d"),
        jobmanager_pid=10,
        answering=True,
        version="2.2.1",
        taskmanagers=[TaskManagerStatus("tm-1", None, 1, 0), TaskManagerStatus("tm-3", 12, 1, 1)],
        jobs=[JobInfo(JOB, "streamfolio", "RESTARTING", 1)],
    )
    lines = status_lines(status)
    assert lines[0] == "flink 2.2.1: JobManager pid 10, REST http://localhost:8081"
    rows = [line.split() for line in lines]
    assert ["tm-1", "gone", "1", "0"] in rows
    assert ["tm-3", "12", "1", "1"] in rows
    assert [JOB, "RESTARTING", "streamfolio"] in rows


def test_flink_run_answers_the_job_id_or_fails_with_its_output(tmp_path: Path) -> None:
    log = tmp_path / "flink-run.log"
    said = f"Job has been submitted with JobID {JOB}"
    assert run_submit(["sh", "-c", f"echo '{said}'"], os.environ, log, timeout_s=30) == JOB
    failing = ["sh", "-c", "echo 'Caused by: no such topic'; echo '\tat x.Y(Y.java:1)'; exit 1"]
    with pytest.raises(ClusterError) as caught:
        run_submit(failing, os.environ, log, timeout_s=30)
    assert "flink run failed (exit 1)" in str(caught.value)
    assert "Caused by: no such topic" in str(caught.value)
    assert "at x.Y" not in str(caught.value)
    assert said in log.read_text() and "no such topic" in log.read_text()


def test_the_worker_site_preloads_in_workers_only_and_runs_a_hidden_one(tmp_path: Path) -> None:
    site = Path(sys.modules["streamfolio.flink.worker_site.sitecustomize"].__file__ or "").parent
    (tmp_path / "sitecustomize.py").write_text(
        "import pathlib; pathlib.Path(__file__).with_name('ran').touch()\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": f"{site}:{tmp_path}"}
    probe = "import sys; print('streamfolio.flink.operators' in sys.modules)"
    for argv, preloaded in (([], "False"), ([WORKER_MAIN], "True")):
        shown = subprocess.run(
            [sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True
        )
        assert shown.stdout.strip() == preloaded, shown.stderr
    assert (tmp_path / "ran").exists()  # the sitecustomize it hides still runs
