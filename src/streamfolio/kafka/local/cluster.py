"""A local multi-broker KRaft cluster like production: :class:`LocalCluster`.

``kafka up`` starts one when ``kafka.local.brokers > 1`` (or ``--brokers``) or when
``kafka.security.protocol`` is not PLAINTEXT; otherwise the single broker of
:mod:`~streamfolio.kafka.local.broker` runs as before. Each node is a combined broker and
controller (:mod:`~streamfolio.kafka.local.nodes`) started detached from the same jars. Secured,
:meth:`~LocalCluster.up` also makes the certificates (:mod:`~streamfolio.kafka.local.tls`), the
password files and SCRAM users (:mod:`~streamfolio.kafka.local.scram`) and the ACLs of every
component (:mod:`~streamfolio.kafka.local.access`), working as the ``admin`` principal.

For fault tests: :meth:`~LocalCluster.kill_node` (SIGKILL), :meth:`~LocalCluster.start_node`,
:meth:`~LocalCluster.node_pids` and :meth:`~LocalCluster.wait_for_full_isr`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from streamfolio.config import KafkaSettings, LocalKafkaSettings, Settings
from streamfolio.devtools.files import locked
from streamfolio.kafka.admin.client import KafkaAdminError
from streamfolio.kafka.admin.ensure import ensure_topics
from streamfolio.kafka.admin.report import GroupLag, describe
from streamfolio.kafka.admin.specs import TopicSpec
from streamfolio.kafka.local import access, scram
from streamfolio.kafka.local.cluster_admin import (
    AuthenticationFailedError,
    PartitionReplicas,
    acls_by_principal,
    connect,
    ensure_acls,
    replicas,
    wait_for_full_isr,
)
from streamfolio.kafka.local.cluster_status import ClusterStatus, ClusterUpResult, NodeState
from streamfolio.kafka.local.install import (
    LIB_DIR,
    LocalKafkaError,
    Progress,
    cluster_id,
    fetch_kafka_jars,
    find_java,
)
from streamfolio.kafka.local.launch import NodeLauncher, check_ports, node_failure
from streamfolio.kafka.local.nodes import Node, node_properties, nodes_of, secured
from streamfolio.kafka.local.processes import (
    broker_pids,
    is_broker,
    listening,
    stop,
)
from streamfolio.kafka.local.tls import TlsFiles, copy_ca, ensure_certificates

__all__ = ["SHAPE_FILE", "LocalCluster", "wants_cluster"]

SHAPE_FILE = "cluster.json"
"""In the data dir of a cluster: its node count (a static quorum cannot grow or shrink)."""


def wants_cluster(kafka: KafkaSettings, data_dir: Path, brokers: int | None = None) -> int | None:
    """How many nodes ``kafka up`` should start as a :class:`LocalCluster`, or None for the
    single development broker of :class:`~streamfolio.kafka.local.broker.LocalKafka`.

    A cluster when ``brokers`` (``--brokers``) or ``kafka.local.brokers`` is above 1, when
    ``kafka.security.protocol`` is not PLAINTEXT (only the cluster is secured), or when
    ``data_dir`` already holds one (so ``down`` and ``status`` find what ``up --brokers``
    started).

    >>> nowhere = Path("/nowhere")
    >>> wants_cluster(KafkaSettings(), nowhere), wants_cluster(KafkaSettings(), nowhere, 3)
    (None, 3)
    """
    secure = kafka.security.protocol != "PLAINTEXT"
    if brokers is not None:
        return brokers if brokers > 1 or secure else None
    shape = data_dir / SHAPE_FILE
    if shape.is_file():
        return int(json.loads(shape.read_text(encoding="utf-8"))["nodes"])
    return kafka.local.brokers if kafka.local.brokers > 1 or secure else None


class LocalCluster:
    """The cluster ``settings.kafka.local`` describes, of ``brokers`` nodes (default
    ``kafka.local.brokers``), for the checkout at ``root``."""

    def __init__(
        self,
        settings: Settings,
        root: Path,
        *,
        brokers: int | None = None,
        lib_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        local = settings.kafka.local
        if brokers is not None and brokers != local.brokers:
            try:  # the port ranges of the new size must not overlap either
                local = LocalKafkaSettings.model_validate(
                    {**local.model_dump(), "brokers": brokers}
                )
            except ValidationError as exc:
                raise LocalKafkaError(f"--brokers {brokers}: {exc.errors()[0]['msg']}") from None
        self.settings = settings
        self.kafka = settings.kafka.model_copy(update={"local": local})
        self.root = root.resolve()
        data_dir = local.data_dir
        self.data_dir = (data_dir if data_dir.is_absolute() else self.root / data_dir).resolve()
        self.lib_dir = (lib_dir or self.root / LIB_DIR / local.kafka_version).resolve()
        self.nodes = nodes_of(self.kafka, self.data_dir, local.brokers)
        self.secured = secured(self.kafka)
        self.tls = TlsFiles(self.data_dir / "tls") if self.secured else None
        self._progress = progress or (lambda _line: None)

    @property
    def bootstrap(self) -> str:
        """Every node's client listener, comma-separated: ``kafka.bootstrap_servers``."""
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def shape_file(self) -> Path:
        """Records the node count: a static quorum cannot grow or shrink."""
        return self.data_dir / SHAPE_FILE

    def admin_config(self) -> dict[str, str]:
        """librdkafka properties of the tooling (the ``admin`` principal, trusting this
        cluster's CA), without ``bootstrap.servers``."""
        config = self.kafka.client_config("admin")
        config.pop("bootstrap.servers", None)
        if self.tls is not None and self.kafka.security.tls:
            config["ssl.ca.location"] = str(self.tls.ca_file)
        return config

    # ---------------------------------------------------------------------------- processes

    def node_pid(self, index: int) -> int | None:
        """Node ``index``'s process id if it runs."""
        node = self.nodes[index]
        pids = broker_pids(node.pid_file, node.properties_file)
        return pids[0] if pids else None

    def node_pids(self) -> dict[int, int | None]:
        """Every node's process id (None: not running)."""
        return {n.index: self.node_pid(n.index) for n in self.nodes}

    def is_running(self) -> bool:
        """True if any node runs."""
        return any(pid is not None for pid in self.node_pids().values())

    def _check_shape(self) -> None:
        count = len(self.nodes)
        if self.shape_file.is_file():
            known = int(json.loads(self.shape_file.read_text(encoding="utf-8"))["nodes"])
            if known != count:
                raise LocalKafkaError(
                    f"{self.data_dir} holds a cluster of {known} node(s), not {count}; use "
                    f"--brokers {known}, or stop it and delete {self.data_dir} to start over"
                )
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.shape_file.write_text(json.dumps({"nodes": count}) + "\n", encoding="utf-8")

    def _secure_files(self) -> list[scram.ScramUser]:
        """Certificates, password files, and the users to create; the CA copied to
        ``kafka.security.ca_file`` if that does not exist yet."""
        assert self.tls is not None
        ensure_certificates(self.tls.folder, len(self.nodes))
        security = self.kafka.security
        if security.ca_file is not None:
            copy_ca(self.tls, security.ca_file)
        for key in scram.ensure_password_files(security):
            self._progress(f"created a random password for {key} (its password_file)")
        return scram.scram_users(security)

    def _write_properties(self, node: Node) -> None:
        admin = self.kafka.security.credentials("admin") if self.secured else None
        node.folder.mkdir(parents=True, exist_ok=True)
        node.properties_file.write_text(
            node_properties(
                self.kafka,
                node,
                self.nodes,
                tls=self.tls,
                super_users=(admin[0],) if admin else (),
            ),
            encoding="utf-8",
        )

    def _launcher(self) -> NodeLauncher:
        return NodeLauncher(find_java(), self.root, self.lib_dir)

    def _format(
        self, launcher: NodeLauncher, nodes: Sequence[Node], users: Sequence[scram.ScramUser]
    ) -> None:
        id_file = self.data_dir / "cluster.id"
        if not id_file.is_file():
            id_file.write_text(cluster_id() + "\n", encoding="utf-8")
        mechanism = self.kafka.security.sasl_mechanism
        self._progress(f"formatting KRaft storage of node(s) {[n.index for n in nodes]}…")
        launcher.format(
            nodes,
            id_file.read_text(encoding="utf-8").strip(),
            scram.format_arguments(users, mechanism) if users else [],
        )

    def _wait_for_nodes(self, pids: dict[int, int], deadline: float) -> None:
        """Until every node in ``pids`` answers and the metadata lists all nodes as brokers."""
        config = self.admin_config()
        waiting = dict(pids)
        while True:
            for index, pid in list(waiting.items()):
                node = self.nodes[index]
                if not is_broker(pid, node.properties_file):
                    node.pid_file.unlink(missing_ok=True)
                    raise node_failure(node, f"node {index} (pid {pid}) exited while starting")
                if listening(node.client_port) and _answers(node.bootstrap, config):
                    del waiting[index]
            if not waiting:
                _, metadata = connect(self.bootstrap, config, timeout=5.0)
                if len(metadata.brokers) == len(self.nodes):
                    return
            if time.monotonic() >= deadline:
                late = sorted(waiting) or "some"
                raise LocalKafkaError(
                    f"node(s) {late} of the cluster did not answer in time; read their logs "
                    f"({self.data_dir}/node-*/broker.log)"
                )
            time.sleep(0.25)

    # ---------------------------------------------------------------------------- lifecycle

    def up(self, topics: Sequence[TopicSpec] = (), timeout: float = 120.0) -> ClusterUpResult:
        """Start every node that is not running, wait until all answer, then (secured) make
        sure of the SCRAM users and ACLs, and create ``topics``. Idempotent."""
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.data_dir / ".lock"):
            self._check_shape()
            users = self._secure_files() if self.secured else []
            pids = {i: p for i, p in self.node_pids().items() if p is not None}
            stopped = [n for n in self.nodes if n.index not in pids]
            fresh = [n for n in stopped if not (n.log_dirs / "meta.properties").is_file()]
            if stopped:
                for node in stopped:
                    check_ports(node)
                launcher = self._launcher()
                fetch_kafka_jars(
                    self.root, self.kafka.local.kafka_version, self.lib_dir, self._progress
                )
                started = time.monotonic()
                for node in stopped:
                    self._write_properties(node)
                if fresh:
                    self._format(launcher, fresh, users)
                for node in stopped:
                    pids[node.index] = launcher.start(node)
                self._progress(
                    f"starting {len(stopped)} Kafka node(s) {[n.index for n in stopped]} "
                    f"(pids {[pids[n.index] for n in stopped]}), logs {self.data_dir}/node-*/"
                )
            else:
                self._progress(f"every node of the cluster is running at {self.bootstrap}")
            self._wait_for_nodes(pids, started + timeout)
            self._progress(f"Kafka cluster answers at {self.bootstrap}")
            acls = (0, 0)
            if self.secured:
                admin, _ = connect(self.bootstrap, self.admin_config(), timeout=timeout)
                if len(fresh) < len(self.nodes):  # not all formatted now with the users
                    scram.upsert_users(
                        admin, users, self.kafka.security.sasl_mechanism, timeout=timeout
                    )
                managed = {g.principal for g in access.grants(self.settings)}
                acls = ensure_acls(
                    admin, access.acl_bindings(self.settings), managed, timeout=timeout
                )
                self._progress(f"ACLs: {acls[0]} created, {acls[1]} removed")
        ensured = ensure_topics(
            self.bootstrap, topics, timeout=max(timeout, 10.0), config=self.admin_config()
        )
        return ClusterUpResult(
            self.bootstrap,
            pids,
            tuple(n.index for n in stopped),
            time.monotonic() - started,
            ensured,
            acls,
            tuple(u.username for u in users),
        )

    def down(self, timeout: float = 30.0) -> bool:
        """Stop every node: SIGTERM to all, then SIGKILL after ``timeout`` seconds. False if
        none was running. The data is kept; the next ``up`` resumes the cluster."""
        with (
            locked(self.data_dir / ".lock") if self.data_dir.is_dir() else contextlib.nullcontext()
        ):
            running = {i: p for i, p in self.node_pids().items() if p is not None}
            if not running:
                return False
            started = time.monotonic()
            self._progress(
                f"stopping Kafka node(s) {sorted(running)} (pids {list(running.values())})…"
            )
            for pid in running.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            for index, pid in running.items():
                node = self.nodes[index]
                remaining = max(started + timeout - time.monotonic(), 0.0)
                stop([pid], node.properties_file, remaining, self._progress)
                node.pid_file.unlink(missing_ok=True)
            self._progress(f"Kafka cluster stopped after {time.monotonic() - started:.1f} s")
            return True

    def kill_node(self, index: int) -> int:
        """SIGKILL node ``index`` (a crash, for fault tests) and wait until it is gone; its pid."""
        node = self.nodes[index]
        pid = self.node_pid(index)
        if pid is None:
            raise LocalKafkaError(f"node {index} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while is_broker(pid, node.properties_file):
            if time.monotonic() >= deadline:
                raise LocalKafkaError(f"node {index} (pid {pid}) survived SIGKILL")
            time.sleep(0.05)
        node.pid_file.unlink(missing_ok=True)
        return pid

    def start_node(self, index: int, timeout: float = 120.0) -> int:
        """Start node ``index`` again (if it is not running) and wait until it answers and is a
        registered broker; its pid. The cluster must have been formatted by ``up``."""
        node = self.nodes[index]
        with locked(self.data_dir / ".lock"):
            pid = self.node_pid(index)
            if pid is None:
                if not (node.log_dirs / "meta.properties").is_file():
                    raise LocalKafkaError(f"node {index} was never formatted; run `kafka up`")
                check_ports(node)
                self._write_properties(node)
                pid = self._launcher().start(node)
            self._wait_for_nodes({index: pid}, time.monotonic() + timeout)
            return pid

    def wait_for_full_isr(self, timeout: float = 60.0, topics: Sequence[str] | None = None) -> None:
        """Wait until every partition of ``topics`` (default: all but internal ones) has a
        leader and all its replicas in sync, e.g. after :meth:`start_node`."""
        wait_for_full_isr(self.bootstrap, self.admin_config(), timeout=timeout, topics=topics)

    def status(self, timeout: float = 10.0) -> ClusterStatus:
        """Every node's process, and (if any answers) the partitions' ISR and the ACLs."""
        pids = self.node_pids()
        partitions: tuple[PartitionReplicas, ...] = ()
        acls = None
        error = None
        groups: tuple[GroupLag, ...] = ()
        registered: set[int] = set()
        if any(p is not None for p in pids.values()):
            try:
                admin, metadata = connect(self.bootstrap, self.admin_config(), timeout=timeout)
                registered = set(metadata.brokers)
                partitions = tuple(replicas(metadata))
                if self.secured:
                    acls = acls_by_principal(admin, timeout=timeout)
                groups = describe(
                    self.bootstrap, timeout=timeout, config=self.admin_config()
                ).groups
            except (LocalKafkaError, KafkaAdminError) as exc:
                error = str(exc)
        nodes = tuple(
            NodeState(
                n.index,
                n.bootstrap,
                pids[n.index],
                listening(n.client_port),
                n.index in registered,
                n.log_file,
            )
            for n in self.nodes
        )
        return ClusterStatus(
            self.bootstrap, self.data_dir, self.secured, nodes, partitions, acls, error, groups
        )


def _answers(bootstrap: str, config: dict[str, str]) -> bool:
    """True if the node at ``bootstrap`` answers within a second; a refused login raises."""
    try:
        connect(bootstrap, config, timeout=1.0)
    except AuthenticationFailedError:
        raise
    except LocalKafkaError:
        return False
    return True
