"""Finding and stopping the local cluster's processes, with stand-ins for the JVMs: Python
processes whose command lines name the main classes and ``--configDir`` as Flink's do."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streamfolio.config import Settings, example_config_path, settings_from_mapping
from streamfolio.flink.cluster import ClusterError, LocalFlinkCluster
from streamfolio.flink.cluster.processes import (
    MAIN_CLASSES,
    MARKER_ENV,
    ClusterProcess,
    alive,
    cluster_processes,
    process_of,
    start_detached,
    still_running,
    stop_processes,
    strays,
)

SLEEP = (
    "import os, pathlib, signal, sys, time; {ignore}"
    "pathlib.Path(sys.argv[1], str(os.getpid())).touch(); time.sleep(120)"
)
"""A stand-in JVM: says it is ready (a file named by its pid), then sleeps."""
IGNORE_TERM = "signal.signal(signal.SIGTERM, signal.SIG_IGN); "


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids this test started; killed at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def stand_in(
    started: list[int],
    tmp: Path,
    role: str,
    conf_dir: Path,
    *extra: str,
    ignore_term: bool = False,
    marker: str | None = None,
) -> int:
    """A process whose command line looks like a JVM of the cluster of ``conf_dir``."""
    code = SLEEP.format(ignore=IGNORE_TERM if ignore_term else "")
    command = [
        sys.executable,
        "-c",
        code,
        str(tmp),
        MAIN_CLASSES[role],
        "--configDir",
        str(conf_dir),
    ]
    env = dict(os.environ)
    if marker is not None:
        env[MARKER_ENV] = marker
    pid = start_detached([*command, *extra], env, tmp / "out.log")
    started.append(pid)
    return pid


def wait_ready(pid: int, tmp: Path, conf_dir: Path) -> ClusterProcess:
    """The stand-in once it runs its code (its signal handler set)."""
    for _ in range(400):
        found = process_of(pid, conf_dir)
        if found is not None and (tmp / str(pid)).exists():
            return found
        time.sleep(0.05)
    raise AssertionError(f"{pid} never looked like a cluster process")


def test_a_process_is_the_clusters_by_its_main_class_and_config_dir() -> None:
    conf = Path("/d/conf")
    jm = ["java", MAIN_CLASSES["jobmanager"], "--configDir", "/d/conf"]
    assert process_of(5, conf, jm) == ClusterProcess("jobmanager", 5)
    tm = [
        "java",
        MAIN_CLASSES["taskmanager"],
        "--configDir",
        "/d/conf",
        "-Dtaskmanager.resource-id=tm-3",
    ]
    assert process_of(6, conf, tm) == ClusterProcess("taskmanager", 6, "tm-3")
    assert process_of(6, Path("/other/conf"), tm) is None
    assert process_of(7, conf, ["java", "Other", "--configDir", "/d/conf"]) is None
    assert process_of(8, conf, ["java", MAIN_CLASSES["jobmanager"], "--configDir"]) is None
    assert process_of(9, conf, []) is None


def test_found_by_command_line_and_stopped_with_sigkill_when_sigterm_is_ignored(
    tmp_path: Path, started: list[int]
) -> None:
    conf = tmp_path / "conf"
    jm = stand_in(started, tmp_path, "jobmanager", conf)
    tm = stand_in(
        started,
        tmp_path,
        "taskmanager",
        conf,
        "-D",
        "taskmanager.resource-id=tm-1",
        ignore_term=True,
    )
    wait_ready(jm, tmp_path, conf)
    assert wait_ready(tm, tmp_path, conf).resource_id == "tm-1"
    stand_in(started, tmp_path, "taskmanager", tmp_path / "elsewhere")  # another cluster's

    found = cluster_processes(conf)
    assert [(p.role, p.pid) for p in found] == sorted(
        [("jobmanager", jm), ("taskmanager", tm)], key=lambda r: r[1]
    )
    said: list[str] = []
    stop_processes(found, lambda p: still_running(p, conf, "x"), 0.5, said.append)
    assert cluster_processes(conf) == []
    assert not alive(jm) and not alive(tm)
    assert said and "killing" in said[0] and f"tm-1 ({tm})" in said[0]


def test_strays_are_found_by_the_marker_in_their_environment(
    tmp_path: Path, started: list[int]
) -> None:
    ours = stand_in(started, tmp_path, "taskmanager", tmp_path / "w", marker=str(tmp_path))
    theirs = stand_in(started, tmp_path, "taskmanager", tmp_path / "w2", marker="/another/cluster")
    wait_ready(ours, tmp_path, tmp_path / "w")
    wait_ready(theirs, tmp_path, tmp_path / "w2")
    found = strays(str(tmp_path))
    assert [p.pid for p in found] == [ours]
    assert found[0].role == "worker"
    assert strays(str(tmp_path), known=[ours]) == []


def _settings(tmp: Path, **cluster: object) -> Settings:
    data = yaml.safe_load(example_config_path().read_text(encoding="utf-8"))
    data["flink"]["cluster"] = {"data_dir": str(tmp / "cluster"), **cluster}
    return settings_from_mapping(data)


def test_down_stops_the_jvms_and_what_they_left(tmp_path: Path, started: list[int]) -> None:
    cluster = LocalFlinkCluster(_settings(tmp_path))
    conf, root = cluster.layout.conf_dir, str(cluster.layout.root)
    jm = stand_in(started, tmp_path, "jobmanager", conf, marker=root)
    tm = stand_in(
        started, tmp_path, "taskmanager", conf, "-D", "taskmanager.resource-id=tm-2", marker=root
    )
    worker = stand_in(started, tmp_path, "taskmanager", tmp_path / "no-conf", marker=root)
    for pid, where in ((jm, conf), (tm, conf), (worker, tmp_path / "no-conf")):
        wait_ready(pid, tmp_path, where)
    assert cluster.jobmanager_pid() == jm
    assert cluster.taskmanager_pids() == [tm]
    assert [p.pid for p in cluster.strays()] == [worker]

    stopped = cluster.down(timeout_s=5.0)
    assert sorted(p.pid for p in stopped) == sorted([jm, tm, worker])
    assert cluster.processes() == [] and cluster.strays() == []
    assert cluster.down() == []  # nothing left to stop


def test_up_refuses_a_taken_port_and_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = LocalFlinkCluster(_settings(tmp_path, rest_port=port))
        with pytest.raises(ClusterError, match=r"flink\.cluster\.rest_port"):
            cluster.up(timeout_s=1.0)
    assert cluster.processes() == []
