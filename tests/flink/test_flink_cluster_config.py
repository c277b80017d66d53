"""The local Flink cluster's files, without a JVM: settings, ``config.yaml``, ``lib/``, the
environment of its processes, and the ``flink run`` command that submits the job."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from streamfolio.config import example_config_path, load_config, settings_from_mapping
from streamfolio.config.sections import FlinkClusterSettings
from streamfolio.flink.cluster import LocalFlinkCluster
from streamfolio.flink.cluster.layout import (
    ClusterLayout,
    cluster_configuration,
    distribution,
    write_configuration,
)
from streamfolio.flink.cluster.submit import WORKER_SITE, submit_command


def test_the_defaults_are_two_taskmanagers_of_one_slot_on_8081() -> None:
    cluster = load_config(example_config_path(), environ={}).flink.cluster
    assert (cluster.rest_port, cluster.taskmanagers, cluster.slots) == (8081, 2, 1)
    assert cluster.data_dir == Path(".cache/flink-cluster")


def test_memory_sizes_are_flink_sizes() -> None:
    with pytest.raises(ValidationError):
        FlinkClusterSettings(taskmanager_memory="lots")
    assert FlinkClusterSettings(taskmanager_memory="2g").taskmanager_memory == "2g"


def test_everything_listens_on_localhost_with_the_configured_ports_and_sizes(
    tmp_path: Path,
) -> None:
    cluster = FlinkClusterSettings(rest_port=18081, rpc_port=16123, slots=2)
    base = {"rest": {"port": 8081, "address": "0.0.0.0"}, "env": {"java": {"opts": {"all": "-X"}}}}
    conf = cluster_configuration(cluster, ClusterLayout(tmp_path), base)
    for key in ("rest.address", "rest.bind-address", "jobmanager.rpc.address"):
        assert conf[key] == "localhost", key
    for key in ("jobmanager.bind-host", "taskmanager.bind-host", "taskmanager.host"):
        assert conf[key] == "localhost", key
    assert conf["rest.port"] == "18081"  # over the base's own
    assert conf["jobmanager.rpc.port"] == "16123"
    assert conf["taskmanager.numberOfTaskSlots"] == "2"
    assert conf["taskmanager.memory.process.size"] == "1536m"
    assert conf["env.java.opts.all"] == "-X"  # the wheel's JVM options are kept
    assert conf["python.executable"] == conf["python.client.executable"] == sys.executable
    assert conf["execution.checkpointing.savepoint-dir"] == (tmp_path / "savepoints").as_uri()
    assert conf["env.log.dir"] == str(tmp_path / "log")


def test_the_configuration_folder_is_what_the_scripts_read(tmp_path: Path) -> None:
    layout = ClusterLayout(tmp_path / "data")
    write_configuration(FlinkClusterSettings(rest_port=18081), layout)
    text = (layout.conf_dir / "config.yaml").read_text(encoding="utf-8")
    # The scripts read env.* keys as text: a quoted 'true' would not be true.
    assert "\nenv.stdout-err.redirect-to-file: true\n" in text
    conf = yaml.safe_load(text)
    assert conf["rest.port"] == 18081
    assert "--add-opens" in conf["env.java.opts.all"]  # from the wheel's config.yaml
    assert (layout.conf_dir / "log4j-console.properties").is_file()
    jars = {p.name for p in layout.lib_dir.iterdir()}
    assert any(j.startswith("flink-dist") for j in jars)
    assert any(j.startswith("flink-python") for j in jars)  # from opt/: the Python runtime
    assert all((layout.lib_dir / j).resolve().is_relative_to(distribution()) for j in jars)
    for folder in (layout.log_dir, layout.run_dir, layout.savepoint_dir, layout.tmp_dir):
        assert folder.is_dir()


def test_writing_again_keeps_only_the_wheels_jars(tmp_path: Path) -> None:
    layout = ClusterLayout(tmp_path)
    write_configuration(FlinkClusterSettings(), layout)
    stale = layout.lib_dir / "flink-dist-0.0.jar"
    stale.symlink_to(tmp_path / "nowhere.jar")
    write_configuration(FlinkClusterSettings(), layout)
    assert not stale.is_symlink()
    assert (
        len(list(layout.lib_dir.iterdir())) == len(list((distribution() / "lib").glob("*.jar"))) + 1
    )


def test_the_processes_environment_names_the_clusters_folders(tmp_path: Path) -> None:
    env = ClusterLayout(tmp_path).environment({"PATH": "/usr/bin", "HOME": "/root"})
    assert env["FLINK_CONF_DIR"] == str(tmp_path / "conf")
    assert env["FLINK_LIB_DIR"] == str(tmp_path / "lib")
    assert env["FLINK_LOG_DIR"] == str(tmp_path / "log")
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)  # PEMJA found there
    assert env["HOME"] == "/root"


def test_a_relative_data_dir_is_under_the_checkout_and_options_override(tmp_path: Path) -> None:
    data = yaml.safe_load(example_config_path().read_text(encoding="utf-8"))
    data["flink"]["cluster"] = {"data_dir": "here/cluster", "rest_port": 18081}
    settings = settings_from_mapping(data)
    cluster = LocalFlinkCluster(settings, root=tmp_path, taskmanagers=3)
    assert cluster.layout.root == tmp_path / "here" / "cluster"
    assert cluster.cluster.taskmanagers == 3 and cluster.cluster.slots == 1
    assert cluster.rest_url == "http://localhost:18081"
    command = cluster.submit_command(["--config", "c.yaml"], python="/py", jars=[])
    assert command[0] == str(distribution() / "bin" / "flink")
    assert command[1:5] == ["run", "--detached", "-m", "localhost:18081"]


def test_the_submit_command_ships_the_worker_site_and_the_jars() -> None:
    command = submit_command(
        ["--config", "/c.yaml", "--from-checkpoint", "/sp/savepoint-1"],
        jars=[Path("/j/a.jar"), Path("/j/b.jar")],
        python="/venv/bin/python",
        jobmanager="localhost:8081",
        binary="flink",
    )
    line = shlex.join(command)
    assert "'-Dpipeline.jars=file:///j/a.jar;file:///j/b.jar'" in line
    assert command[command.index("--pyFiles") + 1] == str(WORKER_SITE)
    assert (WORKER_SITE / "sitecustomize.py").is_file()
    assert command[command.index("-pyexec") + 1] == "/venv/bin/python"
    assert command[command.index("-pyclientexec") + 1] == "/venv/bin/python"
    assert command[-4:] == ["--config", "/c.yaml", "--from-checkpoint", "/sp/savepoint-1"]
    remote = submit_command([], jars=[], python="py", target="remote", binary="flink")
    assert remote[:5] == ["flink", "run", "--detached", "--target", "remote"]
    assert "-m" not in remote


def test_the_cluster_reports_to_prometheus_when_the_job_port_is_set(tmp_path: Path) -> None:
    plain = cluster_configuration(FlinkClusterSettings(), ClusterLayout(tmp_path), {})
    assert "metrics.reporters" not in plain
    conf = cluster_configuration(FlinkClusterSettings(), ClusterLayout(tmp_path), {}, 9250)
    assert conf["metrics.reporters"] == "prom"
    assert conf["metrics.reporter.prom.port"] == "9250-9266"  # one per JVM
