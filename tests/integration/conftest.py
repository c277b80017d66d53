"""Fixtures for tests against real services: a Kafka 4.x broker started for the test session.

``kafka_broker`` (session) starts one broker on free ports (never 9092/9093, so a developer's own
broker is left alone) in a temporary data dir, with jars from the checkout's shared cache
``.cache/kafka/lib`` (fetched with Maven on the very first run), creates the configured topics
under names unique to the session, and stops it at the end. Tests that use it are marked
``integration`` automatically.

``secured_kafka_cluster`` (session) is the secured 3-node cluster of test_kafka_cluster.py and
test_cluster_loop.py, started once, when the first of them asks for it: each calls
:meth:`SecuredCluster.ensure_up` first, which brings it back whatever the other left (a node
killed, or the whole cluster stopped). ``flink_session_cluster`` (session) is likewise the Flink
session cluster of test_cluster_loop.py and test_flink_cluster.py
(:meth:`SharedFlinkCluster.ensure_up`: its processes running, no job left, every slot free).

Java 17+ (and Maven, until the jars are cached) are required: without them these tests fail
with a message saying what to install, rather than skip, so CI cannot pass without Kafka.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from streamfolio.config import (
    COMPONENTS,
    Settings,
    example_config_path,
    load_config,
    settings_from_mapping,
)
from streamfolio.kafka.admin import topic_specs
from streamfolio.kafka.local import LocalCluster, LocalKafka, LocalKafkaError, find_java
from streamfolio.kafka.local.processes import bindable, listening

if TYPE_CHECKING:
    from streamfolio.flink.cluster import LocalFlinkCluster

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0  # seconds; a cold JVM on a busy 2-core CI machine is slower than a laptop


@dataclass(frozen=True)
class KafkaBroker:
    """A broker for tests: where it answers, the settings that point at it, and its lifecycle.

    ``config_path`` is a YAML file with ``settings``, for CLIs and services run as processes.
    """

    bootstrap: str
    settings: Settings
    local: LocalKafka
    data_dir: Path
    config_path: Path


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on localhost now (from the ephemeral range)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))  # held open together, so the ports differ
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port_ranges(count: int, width: int) -> list[int]:
    """``count`` first ports of ``width`` consecutive free ports each, all distinct."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - count * width * 10, 10)
        starts = [base + 100 * i for i in range(count)]
        ports = [s + j for s in starts for j in range(width)]
        if all(bindable(p) and not listening(p) for p in ports):
            return starts
    raise RuntimeError("no free port ranges")


def broker_settings(data_dir: Path, port: int, controller_port: int, token: str) -> dict[str, Any]:
    """The packaged example configuration, pointed at a test broker, with topic names suffixed
    by ``token`` (as a plain mapping, to validate or to write out)."""
    data = yaml.safe_load(example_config_path().read_text(encoding="utf-8"))
    data["kafka"]["bootstrap_servers"] = f"localhost:{port}"
    data["kafka"]["local"] = {
        **data["kafka"].get("local", {}),
        "port": port,
        "controller_port": controller_port,
        "data_dir": str(data_dir),
    }
    defaults = Settings.model_fields["topics"].default
    data["topics"] = {role: f"{name}-{token}" for role, name in defaults.model_dump().items()}
    return dict(data)


def _new_broker(base: Path) -> KafkaBroker:
    base.mkdir(parents=True, exist_ok=True)
    port, controller_port = free_ports(2)
    token = uuid.uuid4().hex[:8]
    data = broker_settings(base / "kafka", port, controller_port, token)
    settings = settings_from_mapping(data)
    config_path = base / "streamfolio.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    local = LocalKafka(settings.kafka, ROOT)
    return KafkaBroker(local.bootstrap, settings, local, local.data_dir, config_path)


def _require_tools(local: LocalKafka) -> None:
    try:
        find_java()
    except LocalKafkaError as exc:
        pytest.fail(f"integration tests need Java 17+: {exc}", pytrace=False)
    if not (local.lib_dir / ".complete").is_file() and shutil.which("mvn") is None:
        pytest.fail(
            "integration tests need Maven (mvn) once, to fetch the Kafka jars into "
            f"{local.lib_dir}: apt-get install maven",
            pytrace=False,
        )


def _start(broker: KafkaBroker) -> None:
    _require_tools(broker.local)
    try:
        broker.local.up(topic_specs(broker.settings), timeout=START_TIMEOUT)
    except LocalKafkaError as exc:
        broker.local.down()
        pytest.fail(f"cannot start the test Kafka broker: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One running broker for the whole session, with every configured topic created."""
    broker = _new_broker(tmp_path_factory.mktemp("kafka-session"))
    _start(broker)
    try:
        yield broker
    finally:
        broker.local.down()


def private_broker(base: Path) -> KafkaBroker:
    """A broker of its own (own ports, data dir under ``base``), not started yet: for tests
    that stop or kill it. Whoever makes it stops it."""
    broker = _new_broker(base)
    _require_tools(broker.local)
    return broker


@pytest.fixture
def local_kafka_factory(tmp_path: Path) -> Iterator[Callable[[], KafkaBroker]]:
    """Makes extra, not yet started brokers (own ports and data dir) for lifecycle tests;
    stops whichever of them still run when the test ends."""
    made: list[KafkaBroker] = []

    def make() -> KafkaBroker:
        broker = private_broker(tmp_path / f"broker{len(made)}")
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.local.down()


SHARED_CLUSTER_MODULES = ("test_cluster_loop.py", "test_kafka_cluster.py", "test_flink_cluster.py")
"""The users of the session's shared clusters, run one after the other in this order (where the
first of them would run), so that no cluster idles through other modules: the Kafka cluster
stops at the end of test_kafka_cluster.py, the Flink cluster at the end of
test_flink_cluster.py."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a broker as ``integration``; the shared clusters' users
    together (:data:`SHARED_CLUSTER_MODULES`)."""
    for item in items:
        if {"kafka_broker", "local_kafka_factory"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    here = Path(__file__).parent

    def rank(item: pytest.Item) -> int | None:
        path = Path(str(item.fspath))
        if path.parent == here and path.name in SHARED_CLUSTER_MODULES:
            return SHARED_CLUSTER_MODULES.index(path.name)
        return None

    users = [item for item in items if rank(item) is not None]
    if users:
        first = items.index(users[0])
        others = [item for item in items if rank(item) is None]
        users.sort(key=lambda item: rank(item) or 0)  # stable: file order within a module
        items[:] = others[:first] + users + others[first:]


# ------------------------------------------------------------------ the secured Kafka cluster

CLUSTER_NODES = 3
CLUSTER_START_TIMEOUT = 240.0  # three cold JVMs on a busy 2-core machine


@dataclass(frozen=True)
class SecuredCluster:
    """A secured 3-node KRaft cluster: SASL_SSL with SCRAM for every component, mutual TLS
    between the nodes, ACLs per principal, on free ports in a temporary data dir (never 9092-9094
    or the example's 19092+).

    ``config_path`` is its configuration, with secret paths relative to its folder: a test
    that needs other topics writes its own configuration next to it (:meth:`config_data`).
    """

    local: LocalCluster
    config_path: Path

    def config_data(self) -> dict[str, Any]:
        """The cluster's configuration, as a plain mapping to change and write out."""
        return dict(yaml.safe_load(self.config_path.read_text(encoding="utf-8")))

    def ensure_up(self) -> None:
        """Every node running, this configuration's users, ACLs and topics in place, every
        partition's replicas in sync: what a test may expect, whatever ran before it (``up``
        starts only what is not running, and puts back the ACLs another configuration's ``up``
        replaced)."""
        try:
            self.local.up(topic_specs(self.local.settings), timeout=CLUSTER_START_TIMEOUT)
            self.local.wait_for_full_isr(timeout=CLUSTER_START_TIMEOUT)
        except LocalKafkaError as exc:
            self.local.down()
            pytest.fail(f"cannot start the test Kafka cluster: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def secured_kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    """The secured cluster, started at the first test that asks for it; stopped at the end
    of the session if still running. Users call :meth:`SecuredCluster.ensure_up` first."""
    try:
        find_java()
    except LocalKafkaError as exc:
        pytest.fail(f"integration tests need Java 17+: {exc}", pytrace=False)
    base = tmp_path_factory.mktemp("kafka-cluster")
    port, internal, controller = free_port_ranges(3, CLUSTER_NODES)
    data = broker_settings(base / "kafka", port, controller, uuid.uuid4().hex[:8])
    kafka = data["kafka"]
    kafka["bootstrap_servers"] = ",".join(f"localhost:{port + i}" for i in range(CLUSTER_NODES))
    kafka["replication_factor"] = CLUSTER_NODES
    kafka["local"].update(brokers=CLUSTER_NODES, internal_port=internal)
    kafka["security"] = {
        "protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "ca_file": "conf-ca/ca.pem",  # relative to the configuration file: copied there by up
        "principals": {
            c: {"username": f"sf-{c}", "password_file": f"secrets/{c}.password"} for c in COMPONENTS
        },
    }
    config_path = base / "cluster.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    cluster = SecuredCluster(LocalCluster(load_config(config_path, environ={}), ROOT), config_path)
    try:
        yield cluster
    finally:
        cluster.local.down()


# ------------------------------------------------------------------ the Flink session cluster

FLINK_START_TIMEOUT_S = 240.0
FLINK_ENDED = frozenset({"FAILED", "CANCELED", "FINISHED", "SUSPENDED"})


@dataclass(frozen=True)
class SharedFlinkCluster:
    """A Flink session cluster of separate JVMs (a JobManager, two one-slot TaskManagers) on
    free ports, data in a temporary folder. A test's job configuration takes ``cluster`` as its
    ``flink.cluster``.

    ``first_started`` is what its first ``up`` started (the roles), whichever test asked.
    """

    local: LocalFlinkCluster
    cluster: dict[str, Any]
    first_started: tuple[str, ...]

    def ensure_up(self) -> None:
        """Every process running (``up`` starts what is missing: after a ``down``, or a killed
        TaskManager), no job running (an earlier test's is cancelled), and the JobManager
        listing exactly the running TaskManagers with every slot free (a killed one is dropped
        when its connection is found lost): what a test may expect, whatever ran before it."""
        from streamfolio.flink.cluster.rest import RestError

        self.local.up(timeout_s=FLINK_START_TIMEOUT_S)
        rest = self.local.rest
        for job in rest.jobs():
            if job.state not in FLINK_ENDED:
                with contextlib.suppress(RestError):  # ending by itself meanwhile
                    rest.cancel(job.id)
        deadline = time.monotonic() + FLINK_START_TIMEOUT_S
        while True:
            registered = rest.taskmanagers()
            if (
                all(j.state in FLINK_ENDED for j in rest.jobs())
                and len(registered) == len(self.local.taskmanager_pids())
                and all(t.free_slots == t.slots for t in registered)
            ):
                return
            assert time.monotonic() < deadline, f"the Flink cluster is not idle: {registered}"
            time.sleep(0.5)


@pytest.fixture(scope="session")
def flink_session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedFlinkCluster]:
    """The Flink session cluster, started at the first test that asks for it; stopped at the
    end of the session if still running. Users call :meth:`SharedFlinkCluster.ensure_up` first."""
    from streamfolio.flink.cluster import LocalFlinkCluster

    rest_port, rpc_port = free_ports(2)
    cluster = {
        "rest_port": rest_port,
        "rpc_port": rpc_port,
        "taskmanagers": 2,
        "slots": 1,
        "data_dir": str(tmp_path_factory.mktemp("flink-session-cluster")),
    }
    data = yaml.safe_load(example_config_path().read_text(encoding="utf-8"))
    data["flink"] = {**data["flink"], "cluster": cluster}
    local = LocalFlinkCluster(settings_from_mapping(data), root=ROOT)
    try:
        started = local.up(timeout_s=FLINK_START_TIMEOUT_S)
        yield SharedFlinkCluster(local, cluster, tuple(p.role for p in started))
    finally:
        local.down(timeout_s=5.0)


@pytest.fixture(scope="session")
def flink_jars() -> Path:
    """The Flink Kafka connector jar, fetched with Maven before any job's clock starts.

    On a fresh machine the first fetch resolves Maven's own plugins too; doing it here keeps
    that time out of the jobs' start-up timeouts.
    """
    from streamfolio.flink.connectors import ConnectorError, fetch_jars

    try:
        return fetch_jars(ROOT)
    except ConnectorError as exc:
        pytest.fail(f"cannot fetch the Flink connector jar: {exc}", pytrace=False)


# ---------------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found is not None and Path(found).with_name("initdb").exists():
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts)
    return versions[-1].parent if versions else None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary folder, on a free loopback port, for one test
    (skipped where PostgreSQL is not installed): the store's tests and the Grafana queries'."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no pg_ctl/initdb)")
    # PostgreSQL refuses to run as root; then it runs as the postgres account.
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres account to run PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    # Not pytest's tmp_path: its parents are private to root, and the server must reach it.
    base = Path(tempfile.mkdtemp(prefix="streamfolio-pg-"))
    if prefix:
        os.chown(base, account.pw_uid, account.pw_gid)
    data, (port,) = base / "data", free_ports(1)

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        options = f"-k {base} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "log"),
            "-w",
            "-o",
            options,
            "start",
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"cannot start PostgreSQL: {exc.stderr.decode(errors='replace')}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)
