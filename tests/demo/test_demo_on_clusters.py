"""``streamfolio demo`` on clusters (issue #14, part 4): examples/cluster.yaml's Kafka is the
secured three-broker cluster ``kafka up`` starts, and with ``--flink cluster`` the job is a
follower of the job it submits to the local Flink session cluster. Checked here without a
JVM: the factory, the children's commands, the safety check on a cluster's data dir, the
engines started and stopped, and the broker probe over several servers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import Settings, load_config, settings_from_mapping
from streamfolio.demo import (
    DemoOptions,
    Engines,
    check_local_cluster,
    components,
    local_cluster_id,
    local_kafka,
)
from streamfolio.demo.components import broker_probe, is_reachable, tcp_answering
from streamfolio.errors import ConfigError
from streamfolio.flink.cluster import JobInfo
from streamfolio.kafka.local import LocalCluster, LocalKafka

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "examples" / "cluster.yaml"
CLUSTER_ID = "aT9x3sJqQ3ubyh4R7gO1_w"
PYTHON_MODE = "STREAMFOLIO_FLINK_PYTHON_MODE"


def _cluster_settings(tmp_path: Path) -> Settings:
    """examples/cluster.yaml, copied to ``tmp_path/examples`` with the passwords and CA its
    cluster would have made (under ``tmp_path/.cache``), its data dir there too."""
    copy = tmp_path / "examples" / "cluster.yaml"
    copy.parent.mkdir()
    copy.write_text(CLUSTER_YAML.read_text(encoding="utf-8"), encoding="utf-8")
    made = tmp_path / ".cache" / "kafka-cluster"
    (made / "secrets").mkdir(parents=True)
    (made / "tls").mkdir()
    (made / "tls" / "ca.pem").touch()
    for principal in ("admin", "feed", "job", "rebalancer", "store", "dashboard"):
        (made / "secrets" / f"{principal}.password").write_text(f"{principal}-secret\n")
    settings = load_config(copy, environ={})
    local = settings.kafka.local.model_copy(update={"data_dir": made})
    kafka = settings.kafka.model_copy(update={"local": local})
    return settings.model_copy(update={"kafka": kafka})


def _formatted(settings: Settings, nodes: int = 3, cluster: str = CLUSTER_ID) -> Path:
    """Format the local cluster's data dir as ``kafka up`` leaves it: ``node-<i>/kraft/``."""
    data = Path(settings.kafka.local.data_dir)
    for i in range(nodes):
        kraft = data / f"node-{i}" / "kraft"
        kraft.mkdir(parents=True)
        (kraft / "meta.properties").write_text(
            f"#\nnode.id={i}\nversion=1\ncluster.id={cluster}\ndirectory.id=x{i}\n"
        )
    return data


# ------------------------------------------------------------------- the configuration


def test_the_cluster_example_runs_the_job_over_two_taskmanagers_on_three_brokers() -> None:
    settings = load_config(CLUSTER_YAML, environ={})
    flink = settings.flink
    assert flink.parallelism == 2
    assert (flink.cluster.taskmanagers, flink.cluster.slots) == (2, 1)
    assert flink.cluster.data_dir == Path(".cache/flink-cluster")
    assert flink.checkpoint_dir.parts[0] == ".cache" and not flink.checkpoint_dir.is_absolute()
    kafka = settings.kafka
    assert kafka.local.brokers == 3 and kafka.replication_factor == 3
    assert kafka.security.protocol == "SASL_SSL"
    assert kafka.bootstrap_servers == "localhost:19092,localhost:19093,localhost:19094"
    ports = {kafka.local.port + i for i in range(3)}
    ports |= {kafka.local.internal_port + i for i in range(3)}
    ports |= {kafka.local.controller_port + i for i in range(3)}
    assert len(ports | {flink.cluster.rest_port, flink.cluster.rpc_port}) == 11, "no port twice"


def test_the_demo_starts_what_kafka_up_starts(tmp_path: Path) -> None:
    cluster = local_kafka(_cluster_settings(tmp_path), REPO, lambda _line: None)
    assert isinstance(cluster, LocalCluster)
    assert cluster.bootstrap == "localhost:19092,localhost:19093,localhost:19094"
    demo = load_config(REPO / "examples" / "demo.yaml", environ={})
    assert isinstance(local_kafka(demo, REPO, lambda _line: None), LocalKafka)


# ------------------------------------------------------------------------ the children


def _options(flink: str) -> DemoOptions:
    return DemoOptions(config_path=Path("examples/cluster.yaml"), flink=flink)  # type: ignore[arg-type]


STATE = {"portfolios": [{"stats": {"timestamp": 5}, "weights": {"timestamp": 7}}]}


def test_on_the_flink_cluster_the_job_is_a_follower_resuming_from_the_newest_checkpoint(
    tmp_path: Path,
) -> None:
    settings = load_config(CLUSTER_YAML, environ={})
    checkpoints = tmp_path / "checkpoints"
    settings = settings.model_copy(
        update={"flink": settings.flink.model_copy(update={"checkpoint_dir": checkpoints})}
    )
    children = components(_options("cluster"), settings, STATE, since=0.0, environ={})
    assert [c.name for c in children] == ["job", "feed", "rebalancer", "store", "dashboard"]
    job = children[0]
    assert job.argv[-6:] == [
        "job",
        "submit",
        "--execute",
        "--follow",
        "--config",
        "examples/cluster.yaml",
    ]
    assert job.env == {PYTHON_MODE: "process"}
    assert job.restart_argv is not None
    assert job.restart_argv() == job.argv, "no checkpoint yet: a fresh start"
    newest = checkpoints / "0f" / "chk-4"
    newest.mkdir(parents=True)
    (newest / "_metadata").touch()
    assert job.restart_argv() == [*job.argv, "--from-checkpoint", str(newest)]
    for child in children:  # each connects as its own principal, from the same file
        assert child.argv[child.argv.index("--config") + 1] == "examples/cluster.yaml"
        assert child.name == "job" or child.env == {}


def test_the_job_runs_in_its_own_process_with_flink_local() -> None:
    settings = load_config(CLUSTER_YAML, environ={})
    [job, *_] = components(_options("local"), settings, STATE, since=0.0, environ={})
    assert job.argv[-4:] == ["job", "run", "--config", "examples/cluster.yaml"]
    assert job.env == {PYTHON_MODE: "process"}, "parallelism 2: process mode"
    demo = load_config(REPO / "examples" / "demo.yaml", environ={})
    [job, *_] = components(_options("local"), demo, STATE, since=0.0, environ={})
    assert job.env == {}, "parallelism 1: thread mode, as ever"


def test_a_python_mode_chosen_in_the_environment_is_kept() -> None:
    settings = load_config(CLUSTER_YAML, environ={})
    environ = {PYTHON_MODE: "thread"}
    [job, *_] = components(_options("cluster"), settings, STATE, since=0.0, environ=environ)
    assert job.env == {}, "the demo's own environment reaches the child unchanged"


def test_the_flink_option_is_checked() -> None:
    runner = CliRunner()
    wrong = runner.invoke(app, ["demo", "--flink", "yarn"])
    assert wrong.exit_code == 2 and "--flink" in wrong.stderr
    offline = runner.invoke(app, ["demo", "--offline", "--flink", "cluster"])
    assert offline.exit_code == 2 and "not used by --offline" in offline.stderr


# -------------------------------------------------------------------- the safety check


def test_the_cluster_id_comes_from_the_nodes_storage(tmp_path: Path) -> None:
    settings = _cluster_settings(tmp_path)
    data = _formatted(settings)
    assert local_cluster_id(data) == CLUSTER_ID
    (data / "cluster.id").write_text("from-the-id-file\n")
    assert local_cluster_id(data) == CLUSTER_ID, "the nodes' storage is what they serve"
    for meta in data.glob("node-*/kraft/meta.properties"):
        meta.unlink()
    assert local_cluster_id(data) == "from-the-id-file"


class StandInAdmin:
    """What ``describe_cluster`` answers: the cluster id."""

    def __init__(self, config: dict[str, str]) -> None:
        self.config = config

    def describe_cluster(self, request_timeout: float) -> Any:
        answer = type("Described", (), {"cluster_id": CLUSTER_ID})()
        return type("Future", (), {"result": lambda _self, timeout: answer})()


def test_topics_are_reset_on_the_local_cluster_asked_as_the_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamfolio.kafka.admin as kafka_admin

    settings = _cluster_settings(tmp_path)
    _formatted(settings)
    made: list[StandInAdmin] = []

    def admin_client(bootstrap: str, config: dict[str, str], **_kwargs: Any) -> StandInAdmin:
        assert bootstrap == "localhost:19092,localhost:19093,localhost:19094"
        made.append(StandInAdmin(config))
        return made[-1]

    monkeypatch.setattr(kafka_admin, "admin_client", admin_client)
    cluster = LocalCluster(settings, REPO)
    check_local_cluster(settings, cluster, environ={})
    [admin] = made
    assert admin.config["sasl.username"] == "admin"
    assert admin.config["sasl.password"] == "admin-secret"
    assert admin.config["security.protocol"] == "SASL_SSL"

    with pytest.raises(ConfigError) as refused:
        check_local_cluster(settings, cluster, lambda _s: "another-cluster", environ={})
    assert CLUSTER_ID in str(refused.value) and "another-cluster" in str(refused.value)


def test_without_an_id_yet_only_the_clusters_own_ports_will_do(tmp_path: Path) -> None:
    settings = _cluster_settings(tmp_path)
    cluster = LocalCluster(settings, REPO)

    def never(_settings: Settings) -> str:
        raise AssertionError("not asked")

    for bootstrap in ("localhost:19093", "127.0.0.1:19092,localhost:19094"):
        check_local_cluster(_with_bootstrap(settings, bootstrap), cluster, never, environ={})
    for bootstrap in ("localhost:19095", "localhost:19092,kafka.example.com:19093"):
        with pytest.raises(ConfigError, match="not the local broker's address"):
            check_local_cluster(_with_bootstrap(settings, bootstrap), cluster, never, environ={})


def _with_bootstrap(settings: Settings, bootstrap: str) -> Settings:
    data = settings.model_dump(mode="json", by_alias=True)
    data["kafka"]["bootstrap_servers"] = bootstrap
    return settings_from_mapping(data)


# ---------------------------------------------------------------------------- engines


class StandInKafka:
    def __init__(self, running: bool) -> None:
        self.running = running
        self.calls: list[str] = []

    def is_running(self) -> bool:
        return self.running

    def up(self, topics: Any, timeout: float) -> None:
        self.calls.append("up")

    def down(self) -> bool:
        self.calls.append("down")
        return True


class StandInRest:
    def __init__(self, jobs: list[JobInfo]) -> None:
        self._jobs = jobs

    def jobs(self) -> list[JobInfo]:
        return self._jobs


class StandInFlink:
    rest_url = "http://localhost:8081"

    def __init__(self, running: bool, jobs: list[JobInfo] | None = None) -> None:
        self.running = running
        self.calls: list[str] = []
        self.rest = StandInRest(jobs or [])
        self.layout = type("Layout", (), {"log_dir": Path("/flink/log")})()

    def jobmanager_pid(self) -> int | None:
        return 42 if self.running else None

    def up(self, *, timeout_s: float) -> list[Any]:
        self.calls.append("up")
        return []

    def down(self) -> list[Any]:
        self.calls.append("down")
        return []


def _engines(kafka: StandInKafka, flink: StandInFlink | None, said: list[str]) -> Engines:
    settings = load_config(REPO / "examples" / "demo.yaml", environ={})
    return Engines(
        settings,
        REPO,
        said.append,
        flink="cluster" if flink is not None else "local",
        kafka=kafka,  # type: ignore[arg-type]
        flink_cluster=flink,  # type: ignore[arg-type]
    )


def test_the_demo_stops_the_clusters_it_started_and_only_those() -> None:
    said: list[str] = []
    kafka, flink = StandInKafka(running=False), StandInFlink(running=False)
    engines = _engines(kafka, flink, said)
    engines.up_kafka()
    engines.up_flink()
    engines.down()
    assert kafka.calls == ["up", "down"] and flink.calls == ["up", "down"]
    assert said == ["Flink cluster: http://localhost:8081 (web UI), logs /flink/log"]

    running = JobInfo("abc", "streamfolio", "RUNNING", 1)
    said.clear()
    kafka, flink = StandInKafka(running=True), StandInFlink(True, [running])
    engines = _engines(kafka, flink, said)
    engines.up_kafka()
    engines.up_flink()
    engines.down()
    assert kafka.calls == ["up"] and flink.calls == ["up"], "found running: left running"
    assert "the Flink cluster already runs job(s) abc" in said[-1]


def test_with_flink_local_there_is_no_flink_cluster() -> None:
    said: list[str] = []
    kafka = StandInKafka(running=False)
    engines = _engines(kafka, None, said)
    assert engines.flink is None
    engines.up_kafka()
    engines.up_flink()
    engines.down()
    assert said == [] and kafka.calls == ["up", "down"]


# ------------------------------------------------------------------ the broker probe


def test_the_probe_counts_the_nodes_that_answer() -> None:
    with socket.socket() as one, socket.socket() as two, socket.socket() as closed:
        for server in (one, two, closed):
            server.bind(("127.0.0.1", 0))
        one.listen()
        two.listen()
        ports = [s.getsockname()[1] for s in (one, two, closed)]
        bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports)
        assert tcp_answering(bootstrap, timeout=0.5) == (2, 3)
        probed = broker_probe(bootstrap, StandInKafka(running=True))()
        assert probed == "reachable (2 of 3 brokers)" and is_reachable(probed)
        both = ",".join(f"127.0.0.1:{p}" for p in ports[:2])
        assert broker_probe(both, StandInKafka(running=True))() == "reachable"
    gone = broker_probe(bootstrap, StandInKafka(running=False))()
    assert gone == "down (no broker process)" and not is_reachable(gone)
